/* Reading byte ranges of checkpoint files: page-cache hits are read with a non-blocking
 * buffered read (RWF_NOWAIT), misses with O_DIRECT into aligned buffers, with a buffered
 * fallback where the file system refuses O_DIRECT (tmpfs, some FUSE file systems). */
#ifndef ZS_IO_FILE_READER_H
#define ZS_IO_FILE_READER_H

#include <stddef.h>
#include <stdint.h>

#include "zerostart/err.h"

#define ZS_IO_ALIGN 4096u

typedef enum zs_io_mode {
    ZS_IO_AUTO = -1,     /* cached data buffered, uncached data O_DIRECT */
    ZS_IO_BUFFERED = 0,  /* always buffered reads */
    ZS_IO_DIRECT = 1,    /* always O_DIRECT (when the file system allows it) */
} zs_io_mode_t;

typedef struct zs_io_file {
    const char *path;    /* borrowed */
    int fd;              /* buffered */
    int fd_direct;       /* O_DIRECT, or -1 when unavailable */
    int nowait_ok;       /* 0 once RWF_NOWAIT turned out unsupported */
    uint64_t size;
} zs_io_file_t;

int zs_io_open(zs_io_file_t *f, const char *path, zs_io_mode_t mode, zs_err_t *err);
void zs_io_close(zs_io_file_t *f);

/* Bytes an aligned scratch buffer needs to read `len` bytes at any offset with O_DIRECT. */
size_t zs_io_scratch_bytes(size_t len);

/* Reads [off, off+len) of f. `scratch` is ZS_IO_ALIGN-aligned with at least
 * zs_io_scratch_bytes(len) bytes. When dst is non-NULL the bytes end up in dst; when dst is
 * NULL they are left in scratch and *data points at them. *direct is set to 1 when O_DIRECT
 * was used. Short reads, EOF and I/O errors are errors naming the path and offset. */
int zs_io_read(zs_io_file_t *f, zs_io_mode_t mode, uint64_t off, size_t len, void *dst,
               void *scratch, void **data, int *direct, zs_err_t *err);

#endif
