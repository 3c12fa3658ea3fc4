/* gpu_rt.h for builds without CUDA: no devices, and every GPU operation is refused. */
#include "gpu/gpu_rt.h"

static int none_fail(zs_err_t *err) {
    return zs_err_set(err, ZS_EUNSUPPORTED, "this zerostart was built without CUDA");
}

int zs_gpu_count(void) { return 0; }
int zs_gpu_set_device(int dev, zs_err_t *err) { (void)dev; return none_fail(err); }
int zs_gpu_use_device(int dev, zs_err_t *err) { (void)dev; return none_fail(err); }
int zs_gpu_mem_info(size_t *f, size_t *t, zs_err_t *err) { (void)f; (void)t; return none_fail(err); }
int zs_gpu_malloc(void **p, size_t b, zs_err_t *err) { (void)p; (void)b; return none_fail(err); }
void zs_gpu_free(void *p) { (void)p; }
int zs_gpu_host_register(void *p, size_t b, zs_err_t *err) { (void)p; (void)b; return none_fail(err); }
int zs_gpu_host_register_portable(void *p, size_t b, zs_err_t *err) { (void)p; (void)b; return none_fail(err); }
void zs_gpu_host_unregister(void *p) { (void)p; }
int zs_gpu_stream_create(zs_gpu_stream_t **s, zs_err_t *err) { (void)s; return none_fail(err); }
void zs_gpu_stream_destroy(zs_gpu_stream_t *s) { (void)s; }
int zs_gpu_event_create(zs_gpu_event_t **e, zs_err_t *err) { (void)e; return none_fail(err); }
void zs_gpu_event_destroy(zs_gpu_event_t *e) { (void)e; }
int zs_gpu_memcpy_h2d_async(void *d, const void *s, size_t n, zs_gpu_stream_t *st, zs_err_t *err) {
    (void)d; (void)s; (void)n; (void)st; return none_fail(err);
}
int zs_gpu_memcpy2d_h2d_async(void *d, size_t dp, const void *s, size_t sp, size_t w, size_t r,
                              zs_gpu_stream_t *st, zs_err_t *err) {
    (void)d; (void)dp; (void)s; (void)sp; (void)w; (void)r; (void)st; return none_fail(err);
}
int zs_gpu_memcpy_d2h(void *d, const void *s, size_t n, zs_err_t *err) {
    (void)d; (void)s; (void)n; return none_fail(err);
}
int zs_gpu_event_record(zs_gpu_event_t *e, zs_gpu_stream_t *s, zs_err_t *err) {
    (void)e; (void)s; return none_fail(err);
}
int zs_gpu_event_sync(zs_gpu_event_t *e, zs_err_t *err) { (void)e; return none_fail(err); }
int zs_gpu_stream_sync(zs_gpu_stream_t *s, zs_err_t *err) { (void)s; return none_fail(err); }
int zs_gpu_device_sync(zs_err_t *err) { return none_fail(err); }
const char *zs_gpu_device_name(int dev) { (void)dev; return "none"; }
