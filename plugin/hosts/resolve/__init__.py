"""DaVinci Resolve script and its installer."""
