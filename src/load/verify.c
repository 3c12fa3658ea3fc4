/* Byte-for-byte verification of loaded weights against a plain buffered read of each
 * tensor from its file (GPU tensors are copied back to the host first). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gpu/gpu_rt.h"
#include "zerostart/load.h"
#include "zerostart/verify.h"

#define VERIFY_BUF (16u << 20)

static int verify_read(int fd, const char *path, char *buf, size_t len, uint64_t off, zs_err_t *err) {
    size_t got = 0;
    while (got < len) {
        ssize_t r = pread(fd, buf + got, len - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0)
            return zs_err_set(err, zs_status_from_errno(errno), "read %s at offset %llu: %s", path,
                              (unsigned long long)(off + got), strerror(errno));
        if (r == 0)
            return zs_err_set(err, ZS_EIO, "read %s at offset %llu: unexpected end of file", path,
                              (unsigned long long)(off + got));
        got += (size_t)r;
    }
    return ZS_OK;
}

int zs_weights_verify(const zs_weights_t *w, uint64_t *bytes_checked, zs_err_t *err) {
    const zs_ckpt_t *ck = w->ckpt;
    char *file_buf = malloc(VERIFY_BUF), *dev_buf = malloc(VERIFY_BUF);
    int *fds = malloc((ck->nfiles + 1) * sizeof *fds);
    int rc = ZS_OK;
    if (file_buf == NULL || dev_buf == NULL || fds == NULL) {
        rc = zs_err_set(err, ZS_ENOMEM, "out of memory for verification buffers");
        goto done;
    }
    for (uint32_t i = 0; i < ck->nfiles; i++) fds[i] = -1;
    for (uint32_t i = 0; i < ck->nfiles && rc == ZS_OK; i++) {
        fds[i] = open(ck->files[i].path, O_RDONLY | O_CLOEXEC);
        if (fds[i] < 0)
            rc = zs_err_set(err, zs_status_from_errno(errno), "open %s: %s", ck->files[i].path,
                            strerror(errno));
    }
    uint64_t checked = 0;
    for (size_t t = 0; t < w->ntensors && rc == ZS_OK; t++) {
        const zs_tensor_t *ten = &w->tensors[t];
        const zs_tensor_info_t *ti = ten->info;
        for (uint64_t o = 0; o < ti->nbytes && rc == ZS_OK; o += VERIFY_BUF) {
            size_t n = ti->nbytes - o < VERIFY_BUF ? (size_t)(ti->nbytes - o) : VERIFY_BUF;
            rc = verify_read(fds[ti->file], ck->files[ti->file].path, file_buf, n, ti->file_offset + o, err);
            if (rc != ZS_OK) break;
            const char *got = (const char *)ten->data + o;
            if (w->device.kind == ZS_DEV_CUDA) {
                rc = zs_gpu_memcpy_d2h(dev_buf, got, n, err);
                if (rc != ZS_OK) break;
                got = dev_buf;
            }
            if (memcmp(got, file_buf, n) != 0) {
                size_t k = 0;
                while (k < n && got[k] == file_buf[k]) k++;
                rc = zs_err_set(err, ZS_EIO, "tensor '%s': loaded byte %llu differs from %s offset %llu",
                                ti->name, (unsigned long long)(o + k), ck->files[ti->file].path,
                                (unsigned long long)(ti->file_offset + o + k));
            }
            checked += n;
        }
    }
    if (bytes_checked) *bytes_checked = checked;
done:
    if (fds != NULL)
        for (uint32_t i = 0; i < ck->nfiles; i++)
            if (fds[i] >= 0) close(fds[i]);
    free(fds);
    free(file_buf);
    free(dev_buf);
    return rc;
}
