/* The slice of the CUDA runtime zerostart's host code uses, behind plain C types so that
 * callers compile without CUDA headers. cuda_rt.c implements it with the CUDA runtime;
 * none_rt.c (builds without CUDA) answers ZS_EUNSUPPORTED and a device count of 0. */
#ifndef ZS_GPU_RT_H
#define ZS_GPU_RT_H

#include <stddef.h>

#include "zerostart/err.h"

typedef struct zs_gpu_stream zs_gpu_stream_t;  /* cudaStream_t */
typedef struct zs_gpu_event zs_gpu_event_t;    /* cudaEvent_t */

int zs_gpu_count(void);
/* Makes `dev` current for the calling thread and creates its context. */
int zs_gpu_set_device(int dev, zs_err_t *err);
/* Makes `dev` current for the calling thread (cudaSetDevice only: cheap once its context exists). */
int zs_gpu_use_device(int dev, zs_err_t *err);
int zs_gpu_mem_info(size_t *free_b, size_t *total_b, zs_err_t *err);
int zs_gpu_malloc(void **p, size_t bytes, zs_err_t *err);
void zs_gpu_free(void *p);
/* Page-locks existing host memory (cudaHostRegister) / undoes it. */
int zs_gpu_host_register(void *p, size_t bytes, zs_err_t *err);
/* Same, page-locked for every GPU (cudaHostRegisterPortable): staging shared by several GPUs. */
int zs_gpu_host_register_portable(void *p, size_t bytes, zs_err_t *err);
void zs_gpu_host_unregister(void *p);
int zs_gpu_stream_create(zs_gpu_stream_t **s, zs_err_t *err);
void zs_gpu_stream_destroy(zs_gpu_stream_t *s);
int zs_gpu_event_create(zs_gpu_event_t **e, zs_err_t *err);
void zs_gpu_event_destroy(zs_gpu_event_t *e);
int zs_gpu_memcpy_h2d_async(void *dst, const void *src, size_t n, zs_gpu_stream_t *s, zs_err_t *err);
/* rows x width bytes from pinned host memory (src_pitch between rows) to the device
 * (dst_pitch between rows): cudaMemcpy2DAsync. */
int zs_gpu_memcpy2d_h2d_async(void *dst, size_t dst_pitch, const void *src, size_t src_pitch, size_t width,
                              size_t rows, zs_gpu_stream_t *s, zs_err_t *err);
int zs_gpu_memcpy_d2h(void *dst, const void *src, size_t n, zs_err_t *err);
int zs_gpu_event_record(zs_gpu_event_t *e, zs_gpu_stream_t *s, zs_err_t *err);
int zs_gpu_event_sync(zs_gpu_event_t *e, zs_err_t *err);
int zs_gpu_stream_sync(zs_gpu_stream_t *s, zs_err_t *err);
int zs_gpu_device_sync(zs_err_t *err);
const char *zs_gpu_device_name(int dev);

#endif
