/* Range reads from checkpoint files with the page-cache-aware O_DIRECT policy described in
 * file_reader.h. */
#include "io/file_reader.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int zs_io_open(zs_io_file_t *f, const char *path, zs_io_mode_t mode, zs_err_t *err) {
    memset(f, 0, sizeof *f);
    f->path = path;
    f->fd_direct = -1;
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
    if (mode == ZS_IO_AUTO || mode == ZS_IO_DIRECT) {
        /* EINVAL here means the file system has no O_DIRECT (tmpfs): fall back to buffered. */
        f->fd_direct = open(path, O_RDONLY | O_CLOEXEC | O_DIRECT);
    }
    if ((mode == ZS_IO_AUTO || mode == ZS_IO_CACHED) && f->size > 0) {
        f->map = mmap(NULL, f->size, PROT_READ, MAP_SHARED, f->fd, 0);
        if (f->map == MAP_FAILED) f->map = NULL; /* residency unknown: read buffered */
    }
    return ZS_OK;
}

void zs_io_close(zs_io_file_t *f) {
    if (f->map != NULL) munmap(f->map, f->size);
    f->map = NULL;
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

double zs_io_resident(const zs_io_file_t *f, uint64_t off, size_t len) {
    if (f->map == NULL || len == 0) return 1.0;
    const uint64_t page = 4096;
    uint64_t p0 = off / page, p1 = (off + len + page - 1) / page, resident = 0;
    unsigned char vec[1024];
    for (uint64_t p = p0; p < p1; p += sizeof vec) {
        uint64_t n = p1 - p < sizeof vec ? p1 - p : sizeof vec;
        if (mincore((char *)f->map + p * page, n * page, vec) != 0) return 1.0;
        for (uint64_t i = 0; i < n; i++) resident += vec[i] & 1;
    }
    return (double)resident / (double)(p1 - p0);
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
    int use_direct = f->fd_direct >= 0 &&
                     (mode == ZS_IO_DIRECT || (mode == ZS_IO_AUTO && zs_io_resident(f, off, len) < 0.5));
    if (use_direct) {
        char *p = NULL;
        int rc = io_read_direct(f, off, len, scratch, &p, err);
        if (rc != ZS_OK) return rc;
        *direct = 1;
        if (dst) memcpy(dst, p, len);
        if (data) *data = dst ? dst : p;
        return ZS_OK;
    }
    {
        int rc = io_read_buffered(f, off, len, target, err);
        if (rc != ZS_OK) return rc;
    }
    if (data) *data = target;
    return ZS_OK;
}
