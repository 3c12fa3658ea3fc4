/* safetensors header parsing and validation. The header is untrusted: it is checked for
 * well-formed UTF-8 JSON without duplicate keys, known dtypes, shapes whose byte size does not
 * overflow and matches the data offsets, offsets inside the data region, and no two tensors
 * sharing bytes. Errors name the file (`what`) and the tensor. */
#include "zerostart/ckpt.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

int32_t zs_ckpt_layer_of(const char *name);

/* Returns N for names containing ".layers.N." (or starting "layers.N."), else -1. */
int32_t zs_ckpt_layer_of(const char *name) {
    const char *p = name;
    while ((p = strstr(p, "layers.")) != NULL) {
        if (p == name || p[-1] == '.') {
            const char *d = p + 7;
            int32_t n = 0;
            int digits = 0;
            while (*d >= '0' && *d <= '9' && digits < 7) {
                n = n * 10 + (*d - '0');
                d++;
                digits++;
            }
            if (digits > 0 && digits < 7 && *d == '.') return n;
        }
        p += 7;
    }
    return -1;
}

void zs_st_header_free(zs_st_header_t *h) {
    if (h == NULL) return;
    for (size_t i = 0; i < h->ntensors; i++) free(h->tensors[i].name);
    free(h->tensors);
    h->tensors = NULL;
    h->ntensors = 0;
}

static int st_cmp_offset(const void *a, const void *b) {
    const zs_tensor_info_t *x = *(const zs_tensor_info_t *const *)a;
    const zs_tensor_info_t *y = *(const zs_tensor_info_t *const *)b;
    if (x->file_offset != y->file_offset) return x->file_offset < y->file_offset ? -1 : 1;
    if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
    return 0;
}

static int st_parse_u64(json_t *v, uint64_t *out) {
    if (!json_is_integer(v)) return -1;
    json_int_t i = json_integer_value(v);
    if (i < 0) return -1;
    *out = (uint64_t)i;
    return 0;
}

static int st_parse_metadata(json_t *meta, const char *what, zs_err_t *err) {
    if (json_is_null(meta)) return ZS_OK;
    if (!json_is_object(meta))
        return zs_err_set(err, ZS_EFORMAT, "%s: __metadata__ is not an object", what);
    const char *k;
    json_t *v;
    json_object_foreach(meta, k, v) {
        if (!json_is_string(v))
            return zs_err_set(err, ZS_EFORMAT, "%s: __metadata__[\"%s\"] is not a string", what, k);
    }
    return ZS_OK;
}

static int st_parse_tensor(const char *name, json_t *v, const char *what, zs_tensor_info_t *t,
                           zs_err_t *err) {
    if (!json_is_object(v))
        return zs_err_set(err, ZS_EFORMAT, "%s: tensor '%s': entry is not an object", what, name);
    if (name[0] == '\0') return zs_err_set(err, ZS_EFORMAT, "%s: empty tensor name", what);
    json_t *dtype = NULL, *shape = NULL, *offs = NULL;
    const char *k;
    json_t *f;
    json_object_foreach(v, k, f) {
        if (strcmp(k, "dtype") == 0) dtype = f;
        else if (strcmp(k, "shape") == 0) shape = f;
        else if (strcmp(k, "data_offsets") == 0) offs = f;
        else
            return zs_err_set(err, ZS_EFORMAT, "%s: tensor '%s': unknown field '%s'", what, name, k);
    }
    if (!json_is_string(dtype))
        return zs_err_set(err, ZS_EFORMAT, "%s: tensor '%s': missing or non-string dtype", what, name);
    if (zs_dtype_parse(json_string_value(dtype), &t->dtype) != ZS_OK)
        return zs_err_set(err, ZS_EFORMAT, "%s: tensor '%s': unknown dtype '%.32s'", what, name,
                          json_string_value(dtype));
    if (!json_is_array(shape))
        return zs_err_set(err, ZS_EFORMAT, "%s: tensor '%s': missing or non-array shape", what, name);
    size_t nd = json_array_size(shape);
    if (nd > ZS_MAX_DIMS)
        return zs_err_set(err, ZS_EFORMAT, "%s: tensor '%s': %zu dimensions (at most %d)", what,
                          name, nd, ZS_MAX_DIMS);
    t->ndim = (int)nd;
    uint64_t nelem = 1;
    for (size_t i = 0; i < nd; i++) {
        uint64_t d;
        if (st_parse_u64(json_array_get(shape, i), &d) != 0)
            return zs_err_set(err, ZS_EFORMAT, "%s: tensor '%s': shape[%zu] is not a non-negative integer",
                              what, name, i);
        t->shape[i] = (int64_t)d;
        if (__builtin_mul_overflow(nelem, d, &nelem))
            return zs_err_set(err, ZS_ERANGE, "%s: tensor '%s': element count overflows", what, name);
    }
    t->nelem = nelem;
    if (__builtin_mul_overflow(nelem, (uint64_t)zs_dtype_size(t->dtype), &t->nbytes))
        return zs_err_set(err, ZS_ERANGE, "%s: tensor '%s': byte size overflows", what, name);
    uint64_t b, e;
    if (!json_is_array(offs) || json_array_size(offs) != 2 ||
        st_parse_u64(json_array_get(offs, 0), &b) != 0 || st_parse_u64(json_array_get(offs, 1), &e) != 0)
        return zs_err_set(err, ZS_EFORMAT,
                          "%s: tensor '%s': data_offsets must be [begin, end] non-negative integers",
                          what, name);
    if (b > e)
        return zs_err_set(err, ZS_EFORMAT, "%s: tensor '%s': data_offsets begin %llu > end %llu",
                          what, name, (unsigned long long)b, (unsigned long long)e);
    if (e - b != t->nbytes)
        return zs_err_set(err, ZS_EFORMAT,
                          "%s: tensor '%s': data_offsets span %llu bytes but %s shape needs %llu",
                          what, name, (unsigned long long)(e - b), zs_dtype_name(t->dtype),
                          (unsigned long long)t->nbytes);
    t->file_offset = b;
    t->layer = zs_ckpt_layer_of(name);
    t->name = strdup(name);
    if (t->name == NULL) return zs_err_set(err, ZS_ENOMEM, "%s: out of memory", what);
    return ZS_OK;
}

static int st_check_ranges(zs_st_header_t *h, uint64_t data_len, const char *what, zs_err_t *err) {
    if (h->ntensors == 0) return ZS_OK;
    zs_tensor_info_t **order = malloc(h->ntensors * sizeof *order);
    if (order == NULL) return zs_err_set(err, ZS_ENOMEM, "%s: out of memory", what);
    for (size_t i = 0; i < h->ntensors; i++) order[i] = &h->tensors[i];
    qsort(order, h->ntensors, sizeof *order, st_cmp_offset);
    int rc = ZS_OK;
    uint64_t end_max = 0;
    const zs_tensor_info_t *prev = NULL;
    for (size_t i = 0; i < h->ntensors && rc == ZS_OK; i++) {
        const zs_tensor_info_t *t = order[i];
        uint64_t end = t->file_offset + t->nbytes;
        if (end > data_len) {
            rc = zs_err_set(err, ZS_EFORMAT,
                            "%s: tensor '%s': bytes [%llu, %llu) lie outside the %llu-byte data region",
                            what, t->name, (unsigned long long)t->file_offset,
                            (unsigned long long)end, (unsigned long long)data_len);
        } else if (t->nbytes > 0 && prev != NULL && t->file_offset < end_max) {
            rc = zs_err_set(err, ZS_EFORMAT, "%s: tensors '%s' and '%s' overlap at byte %llu", what,
                            prev->name, t->name, (unsigned long long)t->file_offset);
        }
        if (t->nbytes > 0 && end > end_max) {
            end_max = end;
            prev = t;
        }
    }
    h->data_bytes = end_max;
    free(order);
    return rc;
}

int zs_st_parse_header(const char *json, size_t len, uint64_t data_len, const char *what,
                       zs_st_header_t *out, zs_err_t *err) {
    memset(out, 0, sizeof *out);
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return zs_err_set(err, ZS_EFORMAT, "%s: header is not valid JSON: %s (header byte %d)", what,
                          jerr.text, jerr.position);
    int rc = ZS_OK;
    if (!json_is_object(root)) {
        rc = zs_err_set(err, ZS_EFORMAT, "%s: header is not a JSON object", what);
        goto done;
    }
    size_t n = json_object_size(root);
    out->tensors = calloc(n ? n : 1, sizeof *out->tensors);
    if (out->tensors == NULL) {
        rc = zs_err_set(err, ZS_ENOMEM, "%s: out of memory for %zu tensors", what, n);
        goto done;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            rc = st_parse_metadata(val, what, err);
        } else {
            rc = st_parse_tensor(key, val, what, &out->tensors[out->ntensors], err);
            if (rc == ZS_OK) out->ntensors++;
        }
        if (rc != ZS_OK) goto done;
    }
    rc = st_check_ranges(out, data_len, what, err);
done:
    json_decref(root);
    if (rc != ZS_OK) zs_st_header_free(out);
    return rc;
}
