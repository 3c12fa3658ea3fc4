/* The CUDA backend's entry point for builds without CUDA: always refused. */
#include "engine/backend.h"

int zs_cuda_backend_create(int device, zs_backend_t **out, zs_err_t *err) {
    (void)device;
    *out = NULL;
    return zs_err_set(err, ZS_EUNSUPPORTED, "engine: the CUDA backend is not available: this zerostart was built without CUDA");
}
