"""Face replacement: swappers (morph, .dfm, inswapper), masks, colour transfer, paste-back, scoring.

Modules: ``types`` (Swapper protocol, SwapPatch), ``morph`` (default one-shot triangle-mesh swapper),
``onnx_swappers`` (.dfm / inswapper_128 / ArcFace with contract checks), ``providers`` (ONNX Runtime
execution providers), ``masks``, ``color``, ``blend``, ``mesh``, ``geometry``, ``processor`` (the
render spine's FrameProcessor), ``cli_args`` (render flags), ``score`` and ``bench``.
Heavy imports stay inside the modules so ``import facecomp.swap`` is cheap.
"""
