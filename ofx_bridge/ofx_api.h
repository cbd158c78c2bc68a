/*
 * ofx_api.h - the subset of the OpenFX 1.4 C API this plugin (and its test host) speaks.
 *
 * Written for facecomp from the public OpenFX specification (names, string values, status codes and the
 * order of the function pointers in each suite).  The order of members in every suite struct is part of
 * the binary interface: a host fills the table in the specification's order, so these structs list the
 * members in exactly that order even where this plugin never calls a member.
 */
#ifndef FACECOMP_OFX_API_H
#define FACECOMP_OFX_API_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define FC_OFX_EXPORT __declspec(dllexport)
#else
#define FC_OFX_EXPORT __attribute__((visibility("default")))
#endif

/* ---- core types --------------------------------------------------------------------------------- */

typedef int OfxStatus;
typedef double OfxTime;

/* Opaque handles: the host owns what they point at; the plugin only passes them back. */
typedef struct OfxPropertySetStruct *OfxPropertySetHandle;
typedef struct OfxImageEffectStruct *OfxImageEffectHandle;
typedef struct OfxImageClipStruct *OfxImageClipHandle;
typedef struct OfxParamSetStruct *OfxParamSetHandle;
typedef struct OfxParamStruct *OfxParamHandle;
typedef struct OfxImageMemoryStruct *OfxImageMemoryHandle;
typedef struct OfxMutex *OfxMutexHandle;

typedef struct { int x1, y1, x2, y2; } OfxRectI;
typedef struct { double x1, y1, x2, y2; } OfxRectD;
typedef struct { double x, y; } OfxPointD;
typedef struct { double min, max; } OfxRangeD;

/* What the host hands the plugin in setHost: its own property set and the suite lookup. */
typedef struct OfxHost {
    OfxPropertySetHandle host;
    const void *(*fetchSuite)(OfxPropertySetHandle host, const char *suiteName, int suiteVersion);
} OfxHost;

typedef OfxStatus (*OfxPluginEntryPoint)(const char *action, const void *handle,
                                         OfxPropertySetHandle inArgs, OfxPropertySetHandle outArgs);

/* What OfxGetPlugin(n) returns. */
typedef struct OfxPlugin {
    const char *pluginApi;
    int apiVersion;
    const char *pluginIdentifier;
    unsigned int pluginVersionMajor;
    unsigned int pluginVersionMinor;
    void (*setHost)(OfxHost *host);
    OfxPluginEntryPoint mainEntry;
} OfxPlugin;

/* ---- status codes ------------------------------------------------------------------------------- */

#define kOfxStatOK 0
#define kOfxStatFailed 1
#define kOfxStatErrFatal 2
#define kOfxStatErrUnknown 3
#define kOfxStatErrMissingHostFeature 4
#define kOfxStatErrUnsupported 5
#define kOfxStatErrExists 6
#define kOfxStatErrFormat 7
#define kOfxStatErrMemory 8
#define kOfxStatErrBadHandle 9
#define kOfxStatErrBadIndex 10
#define kOfxStatErrValue 11
#define kOfxStatReplyYes 12
#define kOfxStatReplyNo 13
#define kOfxStatReplyDefault 14
#define kOfxStatErrImageFormat 1000

/* ---- suites (name strings; version 1 unless noted) ---------------------------------------------- */

#define kOfxPropertySuite "OfxPropertySuite"
#define kOfxImageEffectSuite "OfxImageEffectSuite"
#define kOfxParameterSuite "OfxParameterSuite"
#define kOfxMemorySuite "OfxMemorySuite"
#define kOfxMultiThreadSuite "OfxMultiThreadSuite"
#define kOfxMessageSuite "OfxMessageSuite" /* versions 1 and 2 */

#define kOfxImageEffectPluginApi "OfxImageEffectPluginAPI"
#define kOfxImageEffectPluginApiVersion 1

/* Property access.  Index addresses one element of a multi-dimensional property; the N variants move
 * `count` elements at once. */
typedef struct OfxPropertySuiteV1 {
    OfxStatus (*propSetPointer)(OfxPropertySetHandle props, const char *name, int index, void *value);
    OfxStatus (*propSetString)(OfxPropertySetHandle props, const char *name, int index, const char *value);
    OfxStatus (*propSetDouble)(OfxPropertySetHandle props, const char *name, int index, double value);
    OfxStatus (*propSetInt)(OfxPropertySetHandle props, const char *name, int index, int value);
    OfxStatus (*propSetPointerN)(OfxPropertySetHandle props, const char *name, int count, void *const *value);
    OfxStatus (*propSetStringN)(OfxPropertySetHandle props, const char *name, int count, const char *const *value);
    OfxStatus (*propSetDoubleN)(OfxPropertySetHandle props, const char *name, int count, const double *value);
    OfxStatus (*propSetIntN)(OfxPropertySetHandle props, const char *name, int count, const int *value);
    OfxStatus (*propGetPointer)(OfxPropertySetHandle props, const char *name, int index, void **value);
    OfxStatus (*propGetString)(OfxPropertySetHandle props, const char *name, int index, char **value);
    OfxStatus (*propGetDouble)(OfxPropertySetHandle props, const char *name, int index, double *value);
    OfxStatus (*propGetInt)(OfxPropertySetHandle props, const char *name, int index, int *value);
    OfxStatus (*propGetPointerN)(OfxPropertySetHandle props, const char *name, int count, void **value);
    OfxStatus (*propGetStringN)(OfxPropertySetHandle props, const char *name, int count, char **value);
    OfxStatus (*propGetDoubleN)(OfxPropertySetHandle props, const char *name, int count, double *value);
    OfxStatus (*propGetIntN)(OfxPropertySetHandle props, const char *name, int count, int *value);
    OfxStatus (*propReset)(OfxPropertySetHandle props, const char *name);
    OfxStatus (*propGetDimension)(OfxPropertySetHandle props, const char *name, int *count);
} OfxPropertySuiteV1;

/* Effect, clip and image access. */
typedef struct OfxImageEffectSuiteV1 {
    OfxStatus (*getPropertySet)(OfxImageEffectHandle effect, OfxPropertySetHandle *props);
    OfxStatus (*getParamSet)(OfxImageEffectHandle effect, OfxParamSetHandle *params);
    OfxStatus (*clipDefine)(OfxImageEffectHandle effect, const char *name, OfxPropertySetHandle *props);
    OfxStatus (*clipGetHandle)(OfxImageEffectHandle effect, const char *name, OfxImageClipHandle *clip,
                               OfxPropertySetHandle *props);
    OfxStatus (*clipGetPropertySet)(OfxImageClipHandle clip, OfxPropertySetHandle *props);
    OfxStatus (*clipGetImage)(OfxImageClipHandle clip, OfxTime time, const OfxRectD *region,
                              OfxPropertySetHandle *image);
    OfxStatus (*clipReleaseImage)(OfxPropertySetHandle image);
    OfxStatus (*clipGetRegionOfDefinition)(OfxImageClipHandle clip, OfxTime time, OfxRectD *bounds);
    int (*abort)(OfxImageEffectHandle effect);
    OfxStatus (*imageMemoryAlloc)(OfxImageEffectHandle effect, size_t bytes, OfxImageMemoryHandle *memory);
    OfxStatus (*imageMemoryFree)(OfxImageMemoryHandle memory);
    OfxStatus (*imageMemoryLock)(OfxImageMemoryHandle memory, void **pointer);
    OfxStatus (*imageMemoryUnlock)(OfxImageMemoryHandle memory);
} OfxImageEffectSuiteV1;

/* Parameters.  The value getters and setters are variadic: the host reads/writes through pointers of the
 * parameter's own type (int* for integers, choices and booleans, double* for doubles, char** for strings). */
typedef struct OfxParameterSuiteV1 {
    OfxStatus (*paramDefine)(OfxParamSetHandle params, const char *type, const char *name,
                             OfxPropertySetHandle *props);
    OfxStatus (*paramGetHandle)(OfxParamSetHandle params, const char *name, OfxParamHandle *param,
                                OfxPropertySetHandle *props);
    OfxStatus (*paramSetGetPropertySet)(OfxParamSetHandle params, OfxPropertySetHandle *props);
    OfxStatus (*paramGetPropertySet)(OfxParamHandle param, OfxPropertySetHandle *props);
    OfxStatus (*paramGetValue)(OfxParamHandle param, ...);
    OfxStatus (*paramGetValueAtTime)(OfxParamHandle param, OfxTime time, ...);
    OfxStatus (*paramGetDerivative)(OfxParamHandle param, OfxTime time, ...);
    OfxStatus (*paramGetIntegral)(OfxParamHandle param, OfxTime from, OfxTime to, ...);
    OfxStatus (*paramSetValue)(OfxParamHandle param, ...);
    OfxStatus (*paramSetValueAtTime)(OfxParamHandle param, OfxTime time, ...);
    OfxStatus (*paramGetNumKeys)(OfxParamHandle param, unsigned int *count);
    OfxStatus (*paramGetKeyTime)(OfxParamHandle param, unsigned int nth, OfxTime *time);
    OfxStatus (*paramGetKeyIndex)(OfxParamHandle param, OfxTime time, int direction, int *index);
    OfxStatus (*paramDeleteKey)(OfxParamHandle param, OfxTime time);
    OfxStatus (*paramDeleteAllKeys)(OfxParamHandle param);
    OfxStatus (*paramCopy)(OfxParamHandle to, OfxParamHandle from, OfxTime offset, const OfxRangeD *range);
    OfxStatus (*paramEditBegin)(OfxParamSetHandle params, const char *undoName);
    OfxStatus (*paramEditEnd)(OfxParamSetHandle params);
} OfxParameterSuiteV1;

typedef struct OfxMemorySuiteV1 {
    OfxStatus (*memoryAlloc)(void *owner, size_t bytes, void **data);
    OfxStatus (*memoryFree)(void *data);
} OfxMemorySuiteV1;

typedef void(OfxThreadFunctionV1)(unsigned int threadIndex, unsigned int threadMax, void *arg);

typedef struct OfxMultiThreadSuiteV1 {
    OfxStatus (*multiThread)(OfxThreadFunctionV1 fn, unsigned int threads, void *arg);
    OfxStatus (*multiThreadNumCPUs)(unsigned int *cpus);
    OfxStatus (*multiThreadIndex)(unsigned int *index);
    int (*multiThreadIsSpawnedThread)(void);
    OfxStatus (*mutexCreate)(OfxMutexHandle *mutex, int lockCount);
    OfxStatus (*mutexDestroy)(const OfxMutexHandle mutex);
    OfxStatus (*mutexLock)(const OfxMutexHandle mutex);
    OfxStatus (*mutexUnLock)(const OfxMutexHandle mutex);
    OfxStatus (*mutexTryLock)(const OfxMutexHandle mutex);
} OfxMultiThreadSuiteV1;

/* Messages: version 1 posts one (possibly modal) message, version 2 adds messages that stay attached
 * to the effect until cleared. `handle` is the effect instance (or NULL for the plugin as a whole). */
typedef struct OfxMessageSuiteV1 {
    OfxStatus (*message)(void *handle, const char *type, const char *id, const char *format, ...);
} OfxMessageSuiteV1;

typedef struct OfxMessageSuiteV2 {
    OfxStatus (*message)(void *handle, const char *type, const char *id, const char *format, ...);
    OfxStatus (*setPersistentMessage)(void *handle, const char *type, const char *id, const char *format, ...);
    OfxStatus (*clearPersistentMessage)(void *handle);
} OfxMessageSuiteV2;

#define kOfxMessageFatal "OfxMessageFatal"
#define kOfxMessageError "OfxMessageError"
#define kOfxMessageWarning "OfxMessageWarning"
#define kOfxMessageMessage "OfxMessageMessage"
#define kOfxMessageLog "OfxMessageLog"

/* ---- actions ------------------------------------------------------------------------------------ */

#define kOfxActionLoad "OfxActionLoad"
#define kOfxActionUnload "OfxActionUnload"
#define kOfxActionDescribe "OfxActionDescribe"
#define kOfxActionCreateInstance "OfxActionCreateInstance"
#define kOfxActionDestroyInstance "OfxActionDestroyInstance"
#define kOfxActionPurgeCaches "OfxActionPurgeCaches"
#define kOfxActionSyncPrivateData "OfxActionSyncPrivateData"
#define kOfxActionBeginInstanceChanged "OfxActionBeginInstanceChanged"
#define kOfxActionInstanceChanged "OfxActionInstanceChanged"
#define kOfxActionEndInstanceChanged "OfxActionEndInstanceChanged"
#define kOfxImageEffectActionDescribeInContext "OfxImageEffectActionDescribeInContext"
#define kOfxImageEffectActionRender "OfxImageEffectActionRender"
#define kOfxImageEffectActionBeginSequenceRender "OfxImageEffectActionBeginSequenceRender"
#define kOfxImageEffectActionEndSequenceRender "OfxImageEffectActionEndSequenceRender"
#define kOfxImageEffectActionGetRegionOfDefinition "OfxImageEffectActionGetRegionOfDefinition"
#define kOfxImageEffectActionGetRegionsOfInterest "OfxImageEffectActionGetRegionsOfInterest"
#define kOfxImageEffectActionIsIdentity "OfxImageEffectActionIsIdentity"
#define kOfxImageEffectActionGetClipPreferences "OfxImageEffectActionGetClipPreferences"
#define kOfxImageEffectActionGetTimeDomain "OfxImageEffectActionGetTimeDomain"
#define kOfxImageEffectActionGetFramesNeeded "OfxImageEffectActionGetFramesNeeded"

/* ---- property names and values ------------------------------------------------------------------ */

#define kOfxPropName "OfxPropName"
#define kOfxPropLabel "OfxPropLabel"
#define kOfxPropShortLabel "OfxPropShortLabel"
#define kOfxPropLongLabel "OfxPropLongLabel"
#define kOfxPropVersion "OfxPropVersion"
#define kOfxPropVersionLabel "OfxPropVersionLabel"
#define kOfxPropPluginDescription "OfxPropPluginDescription"
#define kOfxPropInstanceData "OfxPropInstanceData"
#define kOfxPropTime "OfxPropTime"
#define kOfxPropType "OfxPropType"
#define kOfxPluginPropFilePath "OfxPluginPropFilePath"

#define kOfxImageEffectPluginPropGrouping "OfxImageEffectPluginPropGrouping"
#define kOfxImageEffectPluginRenderThreadSafety "OfxImageEffectPluginRenderThreadSafety"
#define kOfxImageEffectRenderUnsafe "OfxImageEffectRenderUnsafe"
#define kOfxImageEffectRenderInstanceSafe "OfxImageEffectRenderInstanceSafe"
#define kOfxImageEffectRenderFullySafe "OfxImageEffectRenderFullySafe"
#define kOfxImageEffectPluginPropHostFrameThreading "OfxImageEffectPluginPropHostFrameThreading"
#define kOfxImageEffectPluginPropSingleInstance "OfxImageEffectPluginPropSingleInstance"
#define kOfxImageEffectPluginPropFieldRenderTwiceAlways "OfxImageEffectPluginPropFieldRenderTwiceAlways"
#define kOfxImageEffectPropSupportedContexts "OfxImageEffectPropSupportedContexts"
#define kOfxImageEffectPropSupportedPixelDepths "OfxImageEffectPropSupportedPixelDepths"
#define kOfxImageEffectPropSupportedComponents "OfxImageEffectPropSupportedComponents"
#define kOfxImageEffectPropSupportsTiles "OfxImageEffectPropSupportsTiles"
#define kOfxImageEffectPropSupportsMultiResolution "OfxImageEffectPropSupportsMultiResolution"
/* the specification's string for this one differs from its macro name */
#define kOfxImageEffectPropSupportsMultipleClipDepths "OfxImageEffectPropMultipleClipDepths"
#define kOfxImageEffectPropSupportsMultipleClipPARs "OfxImageEffectPropSupportsMultipleClipPARs"
#define kOfxImageEffectPropTemporalClipAccess "OfxImageEffectPropTemporalClipAccess"
#define kOfxImageEffectPropContext "OfxImageEffectPropContext"
#define kOfxImageEffectPropRenderWindow "OfxImageEffectPropRenderWindow"
#define kOfxImageEffectPropRenderScale "OfxImageEffectPropRenderScale"
#define kOfxImageEffectPropFieldToRender "OfxImageEffectPropFieldToRender"
#define kOfxImageEffectPropFrameRate "OfxImageEffectPropFrameRate"
#define kOfxImageEffectPropPixelDepth "OfxImageEffectPropPixelDepth"
#define kOfxImageEffectPropComponents "OfxImageEffectPropComponents"
#define kOfxImageEffectPropPreMultiplication "OfxImageEffectPropPreMultiplication"
#define kOfxImageEffectPropRegionOfDefinition "OfxImageEffectPropRegionOfDefinition"
#define kOfxImageEffectHostPropIsBackground "OfxImageEffectHostPropIsBackground"

#define kOfxImageEffectContextFilter "OfxImageEffectContextFilter"
#define kOfxImageEffectContextGeneral "OfxImageEffectContextGeneral"
#define kOfxImageEffectSimpleSourceClipName "Source"
#define kOfxImageEffectOutputClipName "Output"

#define kOfxImageClipPropConnected "OfxImageClipPropConnected"
#define kOfxImageClipPropOptional "OfxImageClipPropOptional"
#define kOfxImageClipPropFieldOrder "OfxImageClipPropFieldOrder"
#define kOfxImageClipPropFieldExtraction "OfxImageClipPropFieldExtraction"
#define kOfxImageFieldDoubled "OfxFieldDoubled"
/* prefix of the per-clip region-of-interest answer: name + clip name */
#define kOfxImageClipPropRoI_ "OfxImageClipPropRoI_"

#define kOfxBitDepthNone "OfxBitDepthNone"
#define kOfxBitDepthByte "OfxBitDepthByte"
#define kOfxBitDepthShort "OfxBitDepthShort"
#define kOfxBitDepthHalf "OfxBitDepthHalf"
#define kOfxBitDepthFloat "OfxBitDepthFloat"
#define kOfxImageComponentRGBA "OfxImageComponentRGBA"
#define kOfxImageComponentRGB "OfxImageComponentRGB"
#define kOfxImageComponentAlpha "OfxImageComponentAlpha"
#define kOfxImageOpaque "OfxImageOpaque"
#define kOfxImagePreMultiplied "OfxImageAlphaPremultiplied"
#define kOfxImageUnPreMultiplied "OfxImageAlphaUnPremultiplied"

#define kOfxImagePropData "OfxImagePropData"
#define kOfxImagePropBounds "OfxImagePropBounds"
#define kOfxImagePropRegionOfDefinition "OfxImagePropRegionOfDefinition"
#define kOfxImagePropRowBytes "OfxImagePropRowBytes"
#define kOfxImagePropPixelAspectRatio "OfxImagePropPixelAspectRatio"
#define kOfxImagePropField "OfxImagePropField"
#define kOfxImagePropUniqueIdentifier "OfxImagePropUniqueIdentifier"

/* parameters */
#define kOfxParamTypeInteger "OfxParamTypeInteger"
#define kOfxParamTypeDouble "OfxParamTypeDouble"
#define kOfxParamTypeBoolean "OfxParamTypeBoolean"
#define kOfxParamTypeChoice "OfxParamTypeChoice"
#define kOfxParamTypeString "OfxParamTypeString"
#define kOfxParamTypeGroup "OfxParamTypeGroup"
#define kOfxParamTypePage "OfxParamTypePage"

#define kOfxParamPropType "OfxParamPropType"
#define kOfxParamPropHint "OfxParamPropHint"
#define kOfxParamPropScriptName "OfxParamPropScriptName"
#define kOfxParamPropParent "OfxParamPropParent"
#define kOfxParamPropEnabled "OfxParamPropEnabled"
#define kOfxParamPropSecret "OfxParamPropSecret"
#define kOfxParamPropDefault "OfxParamPropDefault"
#define kOfxParamPropAnimates "OfxParamPropAnimates"
#define kOfxParamPropMin "OfxParamPropMin"
#define kOfxParamPropMax "OfxParamPropMax"
#define kOfxParamPropDisplayMin "OfxParamPropDisplayMin"
#define kOfxParamPropDisplayMax "OfxParamPropDisplayMax"
#define kOfxParamPropIncrement "OfxParamPropIncrement"
#define kOfxParamPropDigits "OfxParamPropDigits"
#define kOfxParamPropChoiceOption "OfxParamPropChoiceOption"
#define kOfxParamPropStringMode "OfxParamPropStringMode"
#define kOfxParamPropStringFilePathExists "OfxParamPropStringFilePathExists"
#define kOfxParamStringIsSingleLine "OfxParamStringIsSingleLine"
#define kOfxParamStringIsMultiLine "OfxParamStringIsMultiLine"
#define kOfxParamStringIsFilePath "OfxParamStringIsFilePath"
#define kOfxParamStringIsDirectoryPath "OfxParamStringIsDirectoryPath"
#define kOfxParamStringIsLabel "OfxParamStringIsLabel"

#ifdef __cplusplus
}
#endif
#endif
