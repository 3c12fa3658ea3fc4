/* Unit tests for the safetensors header parser: valid headers of every dtype, and each kind
 * of malformed or hostile header rejected with an error naming the file and tensor. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "zerostart/ckpt.h"
#include "zt.h"

int32_t zs_ckpt_layer_of(const char *name);

static int parse(const char *json, uint64_t data_len, zs_st_header_t *h, zs_err_t *err) {
    zs_err_clear(err);
    return zs_st_parse_header(json, strlen(json), data_len, "f.safetensors", h, err);
}

static void expect_error(const char *json, uint64_t data_len, int code, const char *needle) {
    zs_st_header_t h;
    zs_err_t err;
    int rc = parse(json, data_len, &h, &err);
    ZT_CHECK_MSG(rc == code, "rc %d (%s) want %d for %s", rc, err.msg, code, json);
    ZT_CHECK_STR_CONTAINS(err.msg, needle);
    ZT_CHECK_STR_CONTAINS(err.msg, "f.safetensors");
}

static void test_valid_every_dtype(void) {
    static const char *names[] = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2",
                                  "I64", "I32", "I16", "I8", "U8", "BOOL"};
    static const size_t sizes[] = {8, 4, 2, 2, 1, 1, 8, 4, 2, 1, 1, 1};
    for (int i = 0; i < 12; i++) {
        char json[256];
        snprintf(json, sizeof json,
                 "{\"__metadata__\":{\"format\":\"pt\"},\"t\":{\"dtype\":\"%s\",\"shape\":[2,3],"
                 "\"data_offsets\":[0,%zu]}}", names[i], 6 * sizes[i]);
        zs_st_header_t h;
        zs_err_t err;
        ZT_REQUIRE(parse(json, 6 * sizes[i], &h, &err) == ZS_OK);
        ZT_CHECK(h.ntensors == 1);
        ZT_CHECK(h.tensors[0].dtype == (zs_dtype_t)i);
        ZT_CHECK(zs_dtype_size(h.tensors[0].dtype) == sizes[i]);
        ZT_CHECK(strcmp(zs_dtype_name(h.tensors[0].dtype), names[i]) == 0);
        ZT_CHECK(h.tensors[0].nelem == 6 && h.tensors[0].nbytes == 6 * sizes[i]);
        ZT_CHECK(h.tensors[0].ndim == 2 && h.tensors[0].shape[1] == 3);
        zs_st_header_free(&h);
    }
}

static void test_scalar_empty_and_padding(void) {
    const char *json = "{\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
                       "\"e\":{\"dtype\":\"F16\",\"shape\":[0,5],\"data_offsets\":[4,4]},"
                       "\"b\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[4,7]}}      ";
    zs_st_header_t h;
    zs_err_t err;
    ZT_REQUIRE(parse(json, 7, &h, &err) == ZS_OK);
    ZT_CHECK(h.ntensors == 3);
    ZT_CHECK(h.data_bytes == 7);
    for (size_t i = 0; i < h.ntensors; i++) {
        if (strcmp(h.tensors[i].name, "s") == 0) ZT_CHECK(h.tensors[i].ndim == 0 && h.tensors[i].nelem == 1);
        if (strcmp(h.tensors[i].name, "e") == 0) ZT_CHECK(h.tensors[i].nbytes == 0);
    }
    zs_st_header_free(&h);
}

static void test_rejects_malformed(void) {
    expect_error("{\"a\":", 0, ZS_EFORMAT, "not valid JSON");
    expect_error("[1,2]", 0, ZS_EFORMAT, "not a JSON object");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                 "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, ZS_EFORMAT,
                 "not valid JSON");  /* duplicate key */
    expect_error("{\"a\":{\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, ZS_EFORMAT, "unknown dtype");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, ZS_EFORMAT, "shape[0]");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, ZS_EFORMAT, "shape[0]");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 8, ZS_EFORMAT, "needs 8");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 8, ZS_EFORMAT, "begin 4 > end 0");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 8, ZS_EFORMAT, "data_offsets");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 8, ZS_EFORMAT, "outside");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, ZS_EFORMAT, "overlap");
    expect_error("{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}",
                 0, ZS_ERANGE, "overflows");
    expect_error("{\"a\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,0]}}",
                 0, ZS_ERANGE, "byte size overflows");
    expect_error("{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1,
                 ZS_EFORMAT, "dimensions");
    expect_error("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":1}}", 1, ZS_EFORMAT,
                 "unknown field 'x'");
    expect_error("{\"__metadata__\":{\"k\":1}}", 0, ZS_EFORMAT, "__metadata__");
    expect_error("{\"\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, ZS_EFORMAT, "empty tensor name");
    expect_error("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,99999999999999999999999]}}", 1,
                 ZS_EFORMAT, "not valid JSON");
    expect_error("{\"a\":7}", 0, ZS_EFORMAT, "tensor 'a'");
    /* invalid UTF-8 in a name */
    expect_error("{\"\xff\xfe\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, ZS_EFORMAT, "JSON");
}

static void test_embedded_nul_rejected(void) {
    const char json[] = "{\"a\\u0000b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}";
    zs_st_header_t h;
    zs_err_t err = {0};
    ZT_CHECK(zs_st_parse_header(json, sizeof json - 1, 1, "f", &h, &err) == ZS_EFORMAT);
    const char raw[] = "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}";
    char withnul[sizeof raw + 1];
    memcpy(withnul, raw, sizeof raw);
    withnul[3] = '\0';
    zs_err_clear(&err);
    ZT_CHECK(zs_st_parse_header(withnul, sizeof raw - 1, 1, "f", &h, &err) == ZS_EFORMAT);
}

static void test_layer_of(void) {
    ZT_CHECK(zs_ckpt_layer_of("model.layers.0.mlp.up_proj.weight") == 0);
    ZT_CHECK(zs_ckpt_layer_of("model.layers.31.input_layernorm.weight") == 31);
    ZT_CHECK(zs_ckpt_layer_of("layers.7.x") == 7);
    ZT_CHECK(zs_ckpt_layer_of("model.embed_tokens.weight") == -1);
    ZT_CHECK(zs_ckpt_layer_of("model.sublayers.3.x") == -1);
    ZT_CHECK(zs_ckpt_layer_of("model.layers.x.y") == -1);
    ZT_CHECK(zs_ckpt_layer_of("model.layers.99999999.y") == -1);
    ZT_CHECK(zs_ckpt_layer_of("lm_head.weight") == -1);
}

static void test_dtype_parse(void) {
    zs_dtype_t d;
    ZT_CHECK(zs_dtype_parse("BF16", &d) == ZS_OK && d == ZS_BF16);
    ZT_CHECK(zs_dtype_parse("bf16", &d) == ZS_EINVAL);
    ZT_CHECK(zs_dtype_size(ZS_DTYPE_COUNT) == 0);
}

int main(void) {
    ZT_RUN(test_valid_every_dtype);
    ZT_RUN(test_scalar_empty_and_padding);
    ZT_RUN(test_rejects_malformed);
    ZT_RUN(test_embedded_nul_rejected);
    ZT_RUN(test_layer_of);
    ZT_RUN(test_dtype_parse);
    return ZT_DONE();
}
