/* CUDA runtime implementation of gpu_rt.h: every call checked, errors carry the operation
 * and the runtime's message. Built only when ZS_HAVE_CUDA=1. */
#include "gpu/gpu_rt.h"

#include <cuda_runtime.h>
#include <stdio.h>

static int cu_fail(zs_err_t *err, cudaError_t e, const char *what) {
    return zs_err_set(err, ZS_ECUDA, "%s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
}

#define CU_CHECK(call, what) do { cudaError_t e_ = (call); \
    if (e_ != cudaSuccess) return cu_fail(err, e_, (what)); } while (0)

int zs_gpu_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError(); /* no driver / no device: clear the sticky error */
        return 0;
    }
    return n;
}

int zs_gpu_set_device(int dev, zs_err_t *err) {
    char what[64];
    snprintf(what, sizeof what, "cudaSetDevice(%d)", dev);
    CU_CHECK(cudaSetDevice(dev), what);
    CU_CHECK(cudaFree(0), "creating the CUDA context");
    return ZS_OK;
}

int zs_gpu_use_device(int dev, zs_err_t *err) {
    char what[64];
    snprintf(what, sizeof what, "cudaSetDevice(%d)", dev);
    CU_CHECK(cudaSetDevice(dev), what);
    return ZS_OK;
}

int zs_gpu_mem_info(size_t *free_b, size_t *total_b, zs_err_t *err) {
    CU_CHECK(cudaMemGetInfo(free_b, total_b), "cudaMemGetInfo");
    return ZS_OK;
}

int zs_gpu_malloc(void **p, size_t bytes, zs_err_t *err) {
    cudaError_t e = cudaMalloc(p, bytes);
    if (e != cudaSuccess) {
        size_t fr = 0, tot = 0;
        (void)cudaGetLastError();
        cudaMemGetInfo(&fr, &tot);
        return zs_err_set(err, e == cudaErrorMemoryAllocation ? ZS_ENOMEM : ZS_ECUDA,
                          "cudaMalloc(%zu bytes): %s (%zu of %zu bytes free)", bytes,
                          cudaGetErrorString(e), fr, tot);
    }
    return ZS_OK;
}

void zs_gpu_free(void *p) {
    if (p) cudaFree(p);
}

int zs_gpu_host_register(void *p, size_t bytes, zs_err_t *err) {
    CU_CHECK(cudaHostRegister(p, bytes, cudaHostRegisterDefault), "cudaHostRegister");
    return ZS_OK;
}

int zs_gpu_host_register_portable(void *p, size_t bytes, zs_err_t *err) {
    CU_CHECK(cudaHostRegister(p, bytes, cudaHostRegisterPortable), "cudaHostRegister (portable)");
    return ZS_OK;
}

void zs_gpu_host_unregister(void *p) {
    if (p) cudaHostUnregister(p);
}

int zs_gpu_stream_create(zs_gpu_stream_t **s, zs_err_t *err) {
    cudaStream_t st;
    CU_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking), "cudaStreamCreate");
    *s = (zs_gpu_stream_t *)st;
    return ZS_OK;
}

void zs_gpu_stream_destroy(zs_gpu_stream_t *s) {
    if (s) cudaStreamDestroy((cudaStream_t)s);
}

int zs_gpu_event_create(zs_gpu_event_t **e, zs_err_t *err) {
    cudaEvent_t ev;
    CU_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming), "cudaEventCreate");
    *e = (zs_gpu_event_t *)ev;
    return ZS_OK;
}

void zs_gpu_event_destroy(zs_gpu_event_t *e) {
    if (e) cudaEventDestroy((cudaEvent_t)e);
}

int zs_gpu_memcpy_h2d_async(void *dst, const void *src, size_t n, zs_gpu_stream_t *s, zs_err_t *err) {
    CU_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, (cudaStream_t)s), "cudaMemcpyAsync H2D");
    return ZS_OK;
}

int zs_gpu_memcpy2d_h2d_async(void *dst, size_t dst_pitch, const void *src, size_t src_pitch, size_t width,
                              size_t rows, zs_gpu_stream_t *s, zs_err_t *err) {
    CU_CHECK(cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, width, rows, cudaMemcpyHostToDevice,
                               (cudaStream_t)s),
             "cudaMemcpy2DAsync H2D");
    return ZS_OK;
}

int zs_gpu_memcpy_d2h(void *dst, const void *src, size_t n, zs_err_t *err) {
    CU_CHECK(cudaMemcpy(dst, src, n, cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
    return ZS_OK;
}

int zs_gpu_event_record(zs_gpu_event_t *e, zs_gpu_stream_t *s, zs_err_t *err) {
    CU_CHECK(cudaEventRecord((cudaEvent_t)e, (cudaStream_t)s), "cudaEventRecord");
    return ZS_OK;
}

int zs_gpu_event_sync(zs_gpu_event_t *e, zs_err_t *err) {
    CU_CHECK(cudaEventSynchronize((cudaEvent_t)e), "cudaEventSynchronize");
    return ZS_OK;
}

int zs_gpu_stream_sync(zs_gpu_stream_t *s, zs_err_t *err) {
    CU_CHECK(cudaStreamSynchronize((cudaStream_t)s), "cudaStreamSynchronize");
    return ZS_OK;
}

int zs_gpu_device_sync(zs_err_t *err) {
    CU_CHECK(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    return ZS_OK;
}

const char *zs_gpu_device_name(int dev) {
    static _Thread_local struct cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, dev) != cudaSuccess) return "unknown GPU";
    return prop.name;
}
