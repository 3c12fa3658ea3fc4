/* The safetensors dtype table: names and item sizes. */
#include "zerostart/ckpt.h"

#include <string.h>

static const struct { const char *name; size_t size; } zs_dtypes[ZS_DTYPE_COUNT] = {
    [ZS_F64] = {"F64", 8},         [ZS_F32] = {"F32", 4},         [ZS_F16] = {"F16", 2},
    [ZS_BF16] = {"BF16", 2},       [ZS_F8_E4M3] = {"F8_E4M3", 1}, [ZS_F8_E5M2] = {"F8_E5M2", 1},
    [ZS_I64] = {"I64", 8},         [ZS_I32] = {"I32", 4},         [ZS_I16] = {"I16", 2},
    [ZS_I8] = {"I8", 1},           [ZS_U8] = {"U8", 1},           [ZS_BOOL] = {"BOOL", 1},
};

size_t zs_dtype_size(zs_dtype_t dt) {
    return (unsigned)dt < ZS_DTYPE_COUNT ? zs_dtypes[dt].size : 0;
}

const char *zs_dtype_name(zs_dtype_t dt) {
    return (unsigned)dt < ZS_DTYPE_COUNT ? zs_dtypes[dt].name : "?";
}

int zs_dtype_parse(const char *s, zs_dtype_t *out) {
    for (int i = 0; i < ZS_DTYPE_COUNT; i++) {
        if (strcmp(s, zs_dtypes[i].name) == 0) {
            *out = (zs_dtype_t)i;
            return ZS_OK;
        }
    }
    return ZS_EINVAL;
}
