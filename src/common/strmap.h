/* String -> index hash map (open addressing, FNV-1a) used for name lookups such as
 * tensor names. Keys are borrowed: the caller keeps them alive while the map lives. */
#ifndef ZS_STRMAP_H
#define ZS_STRMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct zs_strmap {
    const char **keys;
    size_t *vals;
    size_t cap;   /* power of two */
    size_t len;
} zs_strmap_t;

/* Returns 0, or -1 when out of memory. */
int zs_strmap_init(zs_strmap_t *m, size_t expected);
void zs_strmap_free(zs_strmap_t *m);
/* Inserts key -> val. Returns 0, 1 if the key was already present (value unchanged), -1 on
 * allocation failure. */
int zs_strmap_put(zs_strmap_t *m, const char *key, size_t val);
/* Returns 1 and sets *val when found, else 0. */
int zs_strmap_get(const zs_strmap_t *m, const char *key, size_t *val);
uint64_t zs_hash_str(const char *s);

#endif
