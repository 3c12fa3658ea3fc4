/* Reading byte ranges of checkpoint files: ranges resident in the page cache (asked with
 * mincore() on a mapping of the file, which starts no I/O) are read buffered, the others
 * with O_DIRECT into aligned buffers, with a buffered fallback where the file system refuses
 * O_DIRECT (tmpfs, some FUSE file systems). */
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
    ZS_IO_CACHED = 2,    /* buffered reads, with the residency map kept for readahead decisions */
} zs_io_mode_t;

typedef struct zs_io_file {
    const char *path;    /* borrowed */
    int fd;              /* buffered */
    int fd_direct;       /* O_DIRECT, or -1 when unavailable */
    void *map;           /* PROT_READ mapping for residency checks, or NULL */
    uint64_t size;
} zs_io_file_t;

int zs_io_open(zs_io_file_t *f, const char *path, zs_io_mode_t mode, zs_err_t *err);
void zs_io_close(zs_io_file_t *f);

/* Fraction (0..1) of [off, off+len) resident in the page cache; 1 when unknown. */
double zs_io_resident(const zs_io_file_t *f, uint64_t off, size_t len);

/* Bytes an aligned scratch buffer needs to read `len` bytes at any offset with O_DIRECT. */
size_t zs_io_scratch_bytes(size_t len);

/* Reads [off, off+len) of f. `scratch` is ZS_IO_ALIGN-aligned with at least
 * zs_io_scratch_bytes(len) bytes. When dst is non-NULL the bytes end up in dst; when dst is
 * NULL they are left in scratch and *data points at them. *direct is set to 1 when O_DIRECT
 * was used. Short reads, EOF and I/O errors are errors naming the path and offset. */
int zs_io_read(zs_io_file_t *f, zs_io_mode_t mode, uint64_t off, size_t len, void *dst,
               void *scratch, void **data, int *direct, zs_err_t *err);

#endif
