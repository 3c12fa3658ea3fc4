/* zerostart checkpoint reader: Hugging Face model directories (config.json,
 * model.safetensors or *.safetensors shards with model.safetensors.index.json) and single
 * safetensors files. Every header is validated before any tensor is trusted; see
 * docs/checkpoint.md for the list of checks. Nothing here reads tensor data. */
#ifndef ZEROSTART_CKPT_H
#define ZEROSTART_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "zerostart/err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum zs_dtype {
    ZS_F64, ZS_F32, ZS_F16, ZS_BF16, ZS_F8_E4M3, ZS_F8_E5M2,
    ZS_I64, ZS_I32, ZS_I16, ZS_I8, ZS_U8, ZS_BOOL,
    ZS_DTYPE_COUNT
} zs_dtype_t;

size_t zs_dtype_size(zs_dtype_t dt);
const char *zs_dtype_name(zs_dtype_t dt);            /* safetensors spelling, e.g. "BF16" */
int zs_dtype_parse(const char *s, zs_dtype_t *out);  /* 0 or ZS_EINVAL */

#define ZS_MAX_DIMS 8
/* Cap on a safetensors JSON header (the reference implementation uses 100 MB). */
#define ZS_ST_MAX_HEADER (100u * 1000u * 1000u)

typedef struct zs_tensor_info {
    char *name;
    zs_dtype_t dtype;
    int ndim;
    int64_t shape[ZS_MAX_DIMS];
    uint64_t nelem;
    uint64_t nbytes;
    uint32_t file;         /* index into zs_ckpt_t.files */
    uint64_t file_offset;  /* absolute offset of the tensor's first byte in its file */
    int32_t layer;         /* N for names "*.layers.N.*", else -1 */
} zs_tensor_info_t;

typedef struct zs_ckpt_file {
    char *path;
    uint64_t size;         /* bytes, from fstat at open */
    uint64_t data_start;   /* 8 + header length */
    int64_t mtime_ns;
} zs_ckpt_file_t;

typedef struct zs_ckpt {
    char *dir;                    /* model directory (or the file's directory) */
    zs_ckpt_file_t *files;
    uint32_t nfiles;
    zs_tensor_info_t *tensors;    /* sorted by (file, file_offset) */
    size_t ntensors;
    int32_t nlayers;              /* 1 + largest layer index, 0 if none */
    uint64_t total_bytes;         /* sum of tensor bytes */
    char *config_json;            /* contents of config.json, NULL if absent */
} zs_ckpt_t;

/* One parsed safetensors header (no file access): tensors with offsets relative to the
 * data region, in header order. */
typedef struct zs_st_header {
    zs_tensor_info_t *tensors;    /* .file = 0, .file_offset relative to data start */
    size_t ntensors;
    uint64_t data_bytes;          /* bytes of the data region the header describes */
} zs_st_header_t;

/* Parses and validates the JSON header `json` (len bytes, not NUL terminated) of a file
 * whose data region holds data_len bytes. `what` names the file in error messages. */
int zs_st_parse_header(const char *json, size_t len, uint64_t data_len, const char *what,
                       zs_st_header_t *out, zs_err_t *err);
void zs_st_header_free(zs_st_header_t *h);

/* Opens a model directory or a single .safetensors file and validates all headers (and the
 * index, if present). */
int zs_ckpt_open(const char *path, zs_ckpt_t **out, zs_err_t *err);
void zs_ckpt_close(zs_ckpt_t *ck);
/* Binary-search-free lookup by name (hash); NULL if absent. */
const zs_tensor_info_t *zs_ckpt_find(const zs_ckpt_t *ck, const char *name);

#ifdef __cplusplus
}
#endif
#endif
