/* libFuzzer target: the safetensors JSON header parser on arbitrary bytes. The first 8
 * bytes choose the size of the data region the header is checked against. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "zerostart/ckpt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint64_t data_len = 0;
    if (size >= 8) {
        memcpy(&data_len, data, 8);
        data += 8;
        size -= 8;
        data_len %= (1ull << 40);
    }
    zs_st_header_t h;
    zs_err_t err = {0};
    if (zs_st_parse_header((const char *)data, size, data_len, "fuzz", &h, &err) == ZS_OK) {
        for (size_t i = 0; i < h.ntensors; i++) {
            const zs_tensor_info_t *t = &h.tensors[i];
            if (t->file_offset + t->nbytes > data_len) __builtin_trap();
            if (t->nbytes != t->nelem * zs_dtype_size(t->dtype)) __builtin_trap();
        }
        zs_st_header_free(&h);
    }
    return 0;
}
