/* Reading a whole (small) file into memory: config files, chat templates, the contexts
 * registry. */
#ifndef ZS_COMMON_FILE_READ_H
#define ZS_COMMON_FILE_READ_H

#include <stddef.h>

#include "zerostart/err.h"

/* Reads path into *buf (malloc'd, NUL-terminated; *len bytes before the NUL). Errors name
 * the path: the errno's status (ZS_ENOENT for a missing file), ZS_ERANGE over max_bytes,
 * ZS_ENOMEM, ZS_EIO. */
int zs_read_file(const char *path, size_t max_bytes, char **buf, size_t *len, zs_err_t *err);

#endif
