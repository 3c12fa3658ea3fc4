/* Opening a checkpoint: a Hugging Face model directory (config.json, model.safetensors or
 * shards listed in model.safetensors.index.json) or a single .safetensors file. Reads and
 * validates every shard header and the index, and builds the tensor table and name index. */
#include "zerostart/ckpt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/strmap.h"

#define ZS_MAX_SIDE_FILE (64u << 20) /* cap for config.json and the index */

/* The private part of zs_ckpt_t. */
typedef struct zs_ckpt_impl {
    zs_ckpt_t pub;
    zs_strmap_t names;
} zs_ckpt_impl_t;

static int ck_errno(zs_err_t *err, int e, const char *op, const char *path) {
    return zs_err_set(err, zs_status_from_errno(e), "%s %s: %s", op, path, strerror(e));
}

/* pread until len bytes or EOF/error; returns bytes read or -1 with errno set. */
static ssize_t ck_pread_full(int fd, void *buf, size_t len, off_t off) {
    size_t got = 0;
    while (got < len) {
        ssize_t r = pread(fd, (char *)buf + got, len - got, off + (off_t)got);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

/* Reads a whole small file into a NUL-terminated buffer. */
static int ck_read_small(const char *path, char **out, size_t *len_out, zs_err_t *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ck_errno(err, errno, "open", path);
    struct stat st;
    int rc = ZS_OK;
    char *buf = NULL;
    if (fstat(fd, &st) != 0) {
        rc = ck_errno(err, errno, "stat", path);
        goto done;
    }
    if (!S_ISREG(st.st_mode) || st.st_size > (off_t)ZS_MAX_SIDE_FILE) {
        rc = zs_err_set(err, ZS_EFORMAT, "%s: not a regular file of at most %u bytes", path,
                        ZS_MAX_SIDE_FILE);
        goto done;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL) {
        rc = zs_err_set(err, ZS_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    ssize_t r = ck_pread_full(fd, buf, (size_t)st.st_size, 0);
    if (r < 0) {
        rc = ck_errno(err, errno, "read", path);
        goto done;
    }
    if ((size_t)r != (size_t)st.st_size) {
        rc = zs_err_set(err, ZS_EIO, "%s: short read (%zd of %lld bytes)", path, r,
                        (long long)st.st_size);
        goto done;
    }
    buf[r] = '\0';
    *out = buf;
    if (len_out) *len_out = (size_t)r;
    buf = NULL;
done:
    free(buf);
    close(fd);
    return rc;
}

/* Reads and validates one shard's header; appends its tensors (absolute offsets). */
static int ck_add_file(zs_ckpt_impl_t *ck, const char *path, zs_err_t *err) {
    zs_ckpt_t *c = &ck->pub;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ck_errno(err, errno, "open", path);
    int rc = ZS_OK;
    char *hdr = NULL;
    zs_st_header_t h = {0};
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = ck_errno(err, errno, "stat", path);
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = zs_err_set(err, ZS_EFORMAT, "%s: not a regular file", path);
        goto done;
    }
    uint64_t fsize = (uint64_t)st.st_size;
    unsigned char lenbuf[8];
    ssize_t r = ck_pread_full(fd, lenbuf, 8, 0);
    if (r < 0) {
        rc = ck_errno(err, errno, "read", path);
        goto done;
    }
    if (r < 8) {
        rc = zs_err_set(err, ZS_EFORMAT, "%s: file of %llu bytes is too short for a safetensors header",
                        path, (unsigned long long)fsize);
        goto done;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | lenbuf[i];
    if (hlen > ZS_ST_MAX_HEADER) {
        rc = zs_err_set(err, ZS_EFORMAT, "%s: header length %llu exceeds the %u-byte cap", path,
                        (unsigned long long)hlen, ZS_ST_MAX_HEADER);
        goto done;
    }
    if (hlen < 2 || 8 + hlen > fsize) {
        rc = zs_err_set(err, ZS_EFORMAT,
                        "%s: header length %llu does not fit in the %llu-byte file (truncated?)",
                        path, (unsigned long long)hlen, (unsigned long long)fsize);
        goto done;
    }
    hdr = malloc(hlen);
    if (hdr == NULL) {
        rc = zs_err_set(err, ZS_ENOMEM, "%s: out of memory for the header", path);
        goto done;
    }
    r = ck_pread_full(fd, hdr, hlen, 8);
    if (r < 0) {
        rc = ck_errno(err, errno, "read", path);
        goto done;
    }
    if ((uint64_t)r != hlen) {
        rc = zs_err_set(err, ZS_EIO, "%s: short read of header at offset 8", path);
        goto done;
    }
    uint64_t data_start = 8 + hlen;
    rc = zs_st_parse_header(hdr, hlen, fsize - data_start, path, &h, err);
    if (rc != ZS_OK) goto done;

    zs_ckpt_file_t *files = realloc(c->files, (c->nfiles + 1) * sizeof *files);
    if (files == NULL) {
        rc = zs_err_set(err, ZS_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    c->files = files;
    zs_tensor_info_t *ts = realloc(c->tensors, (c->ntensors + h.ntensors + 1) * sizeof *ts);
    if (ts == NULL) {
        rc = zs_err_set(err, ZS_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    c->tensors = ts;
    zs_ckpt_file_t *f = &c->files[c->nfiles];
    f->path = strdup(path);
    if (f->path == NULL) {
        rc = zs_err_set(err, ZS_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    f->size = fsize;
    f->data_start = data_start;
    f->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    for (size_t i = 0; i < h.ntensors; i++) {
        zs_tensor_info_t t = h.tensors[i];
        t.file = c->nfiles;
        t.file_offset += data_start;
        c->tensors[c->ntensors++] = t;
        h.tensors[i].name = NULL; /* ownership moved */
    }
    c->nfiles++;
done:
    zs_st_header_free(&h);
    free(hdr);
    close(fd);
    return rc;
}

static int ck_cmp_tensor(const void *a, const void *b) {
    const zs_tensor_info_t *x = a, *y = b;
    if (x->file != y->file) return x->file < y->file ? -1 : 1;
    if (x->file_offset != y->file_offset) return x->file_offset < y->file_offset ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* A shard name from the index must be a plain file name inside the model directory. */
static int ck_safe_basename(const char *s) {
    return s[0] != '\0' && strchr(s, '/') == NULL && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

static int ck_strcmp_p(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Opens the shards named by model.safetensors.index.json and checks the weight map. */
static int ck_open_index(zs_ckpt_impl_t *ck, const char *index_path, json_t **map_out,
                         zs_err_t *err) {
    char *text = NULL;
    size_t len = 0;
    int rc = ck_read_small(index_path, &text, &len, err);
    if (rc != ZS_OK) return rc;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (root == NULL)
        return zs_err_set(err, ZS_EFORMAT, "%s: invalid JSON: %s (line %d)", index_path, jerr.text,
                          jerr.line);
    json_t *map = json_object_get(root, "weight_map");
    if (!json_is_object(map) || json_object_size(map) == 0) {
        json_decref(root);
        return zs_err_set(err, ZS_EFORMAT, "%s: missing or empty \"weight_map\" object", index_path);
    }
    /* Collect the distinct shard names, sorted, so shards open in a stable order. */
    size_t n = json_object_size(map), nshards = 0;
    const char **shards = calloc(n, sizeof *shards);
    if (shards == NULL) {
        json_decref(root);
        return zs_err_set(err, ZS_ENOMEM, "%s: out of memory", index_path);
    }
    const char *name;
    json_t *v;
    json_object_foreach(map, name, v) {
        if (!json_is_string(v) || !ck_safe_basename(json_string_value(v))) {
            rc = zs_err_set(err, ZS_EFORMAT,
                            "%s: weight_map[\"%s\"] must be a file name inside the model directory",
                            index_path, name);
            goto done;
        }
        shards[nshards++] = json_string_value(v);
    }
    qsort(shards, nshards, sizeof *shards, ck_strcmp_p);
    for (size_t i = 0; i < nshards; i++) {
        if (i > 0 && strcmp(shards[i], shards[i - 1]) == 0) continue;
        char path[PATH_MAX];
        if (snprintf(path, sizeof path, "%s/%s", ck->pub.dir, shards[i]) >= (int)sizeof path) {
            rc = zs_err_set(err, ZS_ERANGE, "%s: path too long for shard %s", index_path, shards[i]);
            goto done;
        }
        rc = ck_add_file(ck, path, err);
        if (rc != ZS_OK) goto done;
    }
    *map_out = json_incref(map);
done:
    free(shards);
    json_decref(root);
    return rc;
}

static const char *ck_basename(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

/* Every tensor listed in the index must be in the shard it names, and vice versa. */
static int ck_check_index(zs_ckpt_impl_t *ck, json_t *map, const char *index_path, zs_err_t *err) {
    zs_ckpt_t *c = &ck->pub;
    for (size_t i = 0; i < c->ntensors; i++) {
        json_t *v = json_object_get(map, c->tensors[i].name);
        const char *file = ck_basename(c->files[c->tensors[i].file].path);
        if (v == NULL)
            return zs_err_set(err, ZS_EFORMAT, "%s: tensor '%s' in %s is not listed in the index",
                              index_path, c->tensors[i].name, file);
        if (strcmp(json_string_value(v), file) != 0)
            return zs_err_set(err, ZS_EFORMAT, "%s: index puts tensor '%s' in %s but it is in %s",
                              index_path, c->tensors[i].name, json_string_value(v), file);
    }
    const char *name;
    json_t *v;
    json_object_foreach(map, name, v) {
        size_t idx;
        if (!zs_strmap_get(&ck->names, name, &idx))
            return zs_err_set(err, ZS_EFORMAT, "%s: tensor '%s' listed for %s is not in that file",
                              index_path, name, json_string_value(v));
    }
    return ZS_OK;
}

static int ck_build_names(zs_ckpt_impl_t *ck, zs_err_t *err) {
    zs_ckpt_t *c = &ck->pub;
    qsort(c->tensors, c->ntensors, sizeof *c->tensors, ck_cmp_tensor);
    if (zs_strmap_init(&ck->names, c->ntensors) != 0)
        return zs_err_set(err, ZS_ENOMEM, "%s: out of memory", c->dir);
    c->total_bytes = 0;
    c->nlayers = 0;
    for (size_t i = 0; i < c->ntensors; i++) {
        const zs_tensor_info_t *t = &c->tensors[i];
        int r = zs_strmap_put(&ck->names, t->name, i);
        if (r < 0) return zs_err_set(err, ZS_ENOMEM, "%s: out of memory", c->dir);
        if (r == 1) {
            size_t j = 0;
            zs_strmap_get(&ck->names, t->name, &j);
            return zs_err_set(err, ZS_EFORMAT, "tensor '%s' appears in both %s and %s", t->name,
                              c->files[c->tensors[j].file].path, c->files[t->file].path);
        }
        c->total_bytes += t->nbytes;
        if (t->layer + 1 > c->nlayers) c->nlayers = t->layer + 1;
    }
    return ZS_OK;
}

static int ck_has_suffix(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

/* A directory without an index: model.safetensors, or else every *.safetensors file. */
static int ck_open_plain_dir(zs_ckpt_impl_t *ck, zs_err_t *err) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/model.safetensors", ck->pub.dir);
    if (access(path, F_OK) == 0) return ck_add_file(ck, path, err);
    DIR *d = opendir(ck->pub.dir);
    if (d == NULL) return ck_errno(err, errno, "opendir", ck->pub.dir);
    char **names = NULL;
    size_t n = 0;
    int rc = ZS_OK;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!ck_has_suffix(e->d_name, ".safetensors") || e->d_name[0] == '.') continue;
        char **nn = realloc(names, (n + 1) * sizeof *nn);
        if (nn == NULL || (nn[n] = strdup(e->d_name)) == NULL) {
            if (nn) names = nn;
            rc = zs_err_set(err, ZS_ENOMEM, "%s: out of memory", ck->pub.dir);
            break;
        }
        names = nn;
        n++;
    }
    closedir(d);
    if (rc == ZS_OK && n == 0)
        rc = zs_err_set(err, ZS_ENOENT, "%s: no model.safetensors, index or *.safetensors file",
                        ck->pub.dir);
    if (rc == ZS_OK) qsort(names, n, sizeof *names, ck_strcmp_p);
    for (size_t i = 0; i < n && rc == ZS_OK; i++) {
        if (snprintf(path, sizeof path, "%s/%s", ck->pub.dir, names[i]) >= (int)sizeof path)
            rc = zs_err_set(err, ZS_ERANGE, "%s: path too long", names[i]);
        else
            rc = ck_add_file(ck, path, err);
    }
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    return rc;
}

int zs_ckpt_open(const char *path, zs_ckpt_t **out, zs_err_t *err) {
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0) return ck_errno(err, errno, "open", path);
    zs_ckpt_impl_t *ck = calloc(1, sizeof *ck);
    if (ck == NULL) return zs_err_set(err, ZS_ENOMEM, "%s: out of memory", path);
    int rc = ZS_OK;
    json_t *map = NULL;
    if (S_ISDIR(st.st_mode)) {
        ck->pub.dir = strdup(path);
        if (ck->pub.dir == NULL) {
            rc = zs_err_set(err, ZS_ENOMEM, "%s: out of memory", path);
            goto fail;
        }
        size_t dl = strlen(ck->pub.dir);
        while (dl > 1 && ck->pub.dir[dl - 1] == '/') ck->pub.dir[--dl] = '\0';
        char index[PATH_MAX];
        if (snprintf(index, sizeof index, "%s/model.safetensors.index.json", ck->pub.dir) >=
            (int)sizeof index) {
            rc = zs_err_set(err, ZS_ERANGE, "%s: path too long", path);
            goto fail;
        }
        if (access(index, F_OK) == 0) {
            rc = ck_open_index(ck, index, &map, err);
            if (rc == ZS_OK) rc = ck_build_names(ck, err);
            if (rc == ZS_OK) rc = ck_check_index(ck, map, index, err);
        } else {
            rc = ck_open_plain_dir(ck, err);
            if (rc == ZS_OK) rc = ck_build_names(ck, err);
        }
        if (rc != ZS_OK) goto fail;
        char cfg[PATH_MAX];
        snprintf(cfg, sizeof cfg, "%s/config.json", ck->pub.dir);
        if (access(cfg, F_OK) == 0) {
            rc = ck_read_small(cfg, &ck->pub.config_json, NULL, err);
            if (rc != ZS_OK) goto fail;
        }
    } else {
        char *copy = strdup(path);
        if (copy == NULL) {
            rc = zs_err_set(err, ZS_ENOMEM, "%s: out of memory", path);
            goto fail;
        }
        char *slash = strrchr(copy, '/');
        if (slash == NULL) {
            free(copy);
            copy = strdup(".");
        } else if (slash == copy) {
            slash[1] = '\0';
        } else {
            *slash = '\0';
        }
        ck->pub.dir = copy;
        if (copy == NULL) {
            rc = zs_err_set(err, ZS_ENOMEM, "%s: out of memory", path);
            goto fail;
        }
        rc = ck_add_file(ck, path, err);
        if (rc == ZS_OK) rc = ck_build_names(ck, err);
        if (rc != ZS_OK) goto fail;
    }
    json_decref(map);
    *out = &ck->pub;
    return ZS_OK;
fail:
    json_decref(map);
    zs_ckpt_close(&ck->pub);
    return rc;
}

void zs_ckpt_close(zs_ckpt_t *c) {
    if (c == NULL) return;
    zs_ckpt_impl_t *ck = (zs_ckpt_impl_t *)c;
    for (uint32_t i = 0; i < c->nfiles; i++) free(c->files[i].path);
    free(c->files);
    for (size_t i = 0; i < c->ntensors; i++) free(c->tensors[i].name);
    free(c->tensors);
    free(c->dir);
    free(c->config_json);
    zs_strmap_free(&ck->names);
    free(ck);
}

const zs_tensor_info_t *zs_ckpt_find(const zs_ckpt_t *c, const char *name) {
    const zs_ckpt_impl_t *ck = (const zs_ckpt_impl_t *)c;
    size_t i;
    return zs_strmap_get(&ck->names, name, &i) ? &c->tensors[i] : NULL;
}
