/* Range reads from checkpoint files with the page-cache-aware O_DIRECT policy described in
 * file_reader.h. */
#include "io/file_reader.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef RWF_NOWAIT
#define RWF_NOWAIT 0x00000008
#endif

int zs_io_open(zs_io_file_t *f, const char *path, zs_io_mode_t mode, zs_err_t *err) {
    memset(f, 0, sizeof *f);
    f->path = path;
    f->fd_direct = -1;
    f->nowait_ok = 1;
    f->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0) {
        int e = errno;
        return zs_err_set(err, zs_status_from_errno(e), "open %s: %s", path, strerror(e));
    }
    struct stat st;
    if (fstat(f->fd, &st) != 0) {
        int e = errno;
        close(f->fd);
        f->fd = -1;
        return zs_err_set(err, zs_status_from_errno(e), "stat %s: %s", path, strerror(e));
    }
    f->size = (uint64_t)st.st_size;
    if (mode != ZS_IO_BUFFERED) {
        /* EINVAL here means the file system has no O_DIRECT (tmpfs): fall back to buffered. */
        f->fd_direct = open(path, O_RDONLY | O_CLOEXEC | O_DIRECT);
    }
    return ZS_OK;
}

void zs_io_close(zs_io_file_t *f) {
    if (f->fd >= 0) close(f->fd);
    if (f->fd_direct >= 0) close(f->fd_direct);
    f->fd = f->fd_direct = -1;
}

size_t zs_io_scratch_bytes(size_t len) {
    return len + 2 * (size_t)ZS_IO_ALIGN;
}

static int io_fail(const zs_io_file_t *f, int e, uint64_t off, size_t len, zs_err_t *err) {
    return zs_err_set(err, zs_status_from_errno(e), "read %s at offset %llu (%zu bytes): %s", f->path,
                      (unsigned long long)off, len, strerror(e));
}

static int io_short(const zs_io_file_t *f, uint64_t off, size_t len, size_t got, zs_err_t *err) {
    return zs_err_set(err, ZS_EIO,
                      "read %s at offset %llu: file ended after %zu of %zu bytes (truncated?)",
                      f->path, (unsigned long long)off, got, len);
}

/* Blocking buffered read of exactly len bytes. */
static int io_read_buffered(zs_io_file_t *f, uint64_t off, size_t len, char *dst, zs_err_t *err) {
    size_t got = 0;
    while (got < len) {
        ssize_t r = pread(f->fd, dst + got, len - got, (off_t)(off + got));
        if (r < 0) {
            if (errno == EINTR) continue;
            return io_fail(f, errno, off + got, len - got, err);
        }
        if (r == 0) return io_short(f, off, len, got, err);
        got += (size_t)r;
    }
    return ZS_OK;
}

/* Buffered read that only takes what is in the page cache. Returns bytes read (maybe 0). */
static size_t io_read_cached(zs_io_file_t *f, uint64_t off, size_t len, char *dst) {
    size_t got = 0;
    while (got < len && f->nowait_ok) {
        struct iovec iov = {dst + got, len - got};
        ssize_t r = preadv2(f->fd, &iov, 1, (off_t)(off + got), RWF_NOWAIT);
        if (r > 0) {
            got += (size_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && (errno == EOPNOTSUPP || errno == ENOSYS || errno == EINVAL)) f->nowait_ok = 0;
        break; /* EAGAIN: not cached; 0: EOF (the blocking path reports it) */
    }
    return got;
}

/* O_DIRECT read of [off, off+len) into scratch; *data points at byte off. */
static int io_read_direct(zs_io_file_t *f, uint64_t off, size_t len, char *scratch, char **data,
                          zs_err_t *err) {
    uint64_t a0 = off & ~(uint64_t)(ZS_IO_ALIGN - 1);
    uint64_t a1 = (off + len + ZS_IO_ALIGN - 1) & ~(uint64_t)(ZS_IO_ALIGN - 1);
    size_t want = (size_t)(a1 - a0), got = 0, need = (size_t)(off + len - a0);
    while (got < need) {
        ssize_t r = pread(f->fd_direct, scratch + got, want - got, (off_t)(a0 + got));
        if (r < 0) {
            if (errno == EINTR) continue;
            return io_fail(f, errno, a0 + got, want - got, err);
        }
        if (r == 0) return io_short(f, off, len, got > off - a0 ? got - (size_t)(off - a0) : 0, err);
        got += (size_t)r;
        /* O_DIRECT returns a short, unaligned count only at end of file: the file shrank
         * after it was opened. */
        if (got % ZS_IO_ALIGN != 0 && got < need)
            return io_short(f, off, len, got > off - a0 ? got - (size_t)(off - a0) : 0, err);
    }
    *data = scratch + (off - a0);
    return ZS_OK;
}

int zs_io_read(zs_io_file_t *f, zs_io_mode_t mode, uint64_t off, size_t len, void *dst,
               void *scratch, void **data, int *direct, zs_err_t *err) {
    *direct = 0;
    if (len == 0) {
        if (data) *data = dst ? dst : scratch;
        return ZS_OK;
    }
    if (off > f->size || len > f->size - off) return io_short(f, off, len, 0, err);
    char *target = dst ? (char *)dst : (char *)scratch;
    size_t cached = 0;
    if (mode == ZS_IO_AUTO || f->fd_direct < 0) cached = io_read_cached(f, off, len, target);
    if (cached == len) goto out;
    if (cached == 0 && f->fd_direct >= 0 && mode != ZS_IO_BUFFERED) {
        char *p = NULL;
        int rc = io_read_direct(f, off, len, scratch, &p, err);
        if (rc != ZS_OK) return rc;
        *direct = 1;
        if (dst) memcpy(dst, p, len);
        if (data) *data = dst ? dst : p;
        return ZS_OK;
    }
    {
        int rc = io_read_buffered(f, off + cached, len - cached, target + cached, err);
        if (rc != ZS_OK) return rc;
    }
out:
    if (data) *data = target;
    return ZS_OK;
}
