/* Writing synthetic Llama-architecture checkpoints (see include/zerostart/synth.h; the
 * tokenizer files come from synth_tokenizer.c): bf16
 * weights drawn from a seeded generator (small values, never NaN/Inf; norms are 1.0),
 * tensors sorted by name inside each shard as the reference safetensors writer does,
 * headers padded to 8 bytes, shards written in parallel. */
#include "zerostart/synth.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const zs_synth_shape_t synth_shapes[] = {
    {"tiny", 64, 2, 172, 4, 2, 512, 2},
    {"small", 1024, 8, 2816, 16, 4, 1024, 2},
    {"llama3-8b", 4096, 32, 14336, 32, 8, 128256, 4},
    {"llama3-70b", 8192, 80, 28672, 64, 8, 128256, 30},     /* 141.1 GB: tensor parallel over 4 GPUs */
    {"llama3-70b-40l", 8192, 40, 28672, 64, 8, 128256, 15}, /* the 70B shape with 40 layers, 72.7 GB: 2 GPUs */
};

const zs_synth_shape_t *zs_synth_shape(const char *name) {
    for (size_t i = 0; i < sizeof synth_shapes / sizeof synth_shapes[0]; i++)
        if (strcmp(synth_shapes[i].name, name) == 0) return &synth_shapes[i];
    return NULL;
}

typedef struct synth_tensor {
    char name[96];
    int64_t rows, cols;   /* cols == 0: a vector */
    int is_norm;
    int shard;
    uint64_t offset;      /* within the shard's data region */
    uint64_t seed;
} synth_tensor_t;

static uint64_t synth_tensor_bytes(const synth_tensor_t *t) {
    return (uint64_t)t->rows * (uint64_t)(t->cols ? t->cols : 1) * 2;
}

/* The tensor list in model order: embeddings, layers, final norm, lm_head. */
static synth_tensor_t *synth_list(const zs_synth_shape_t *s, size_t *n) {
    size_t cap = 3 + (size_t)s->layers * 9;
    synth_tensor_t *t = calloc(cap, sizeof *t);
    if (t == NULL) return NULL;
    int64_t hd = s->hidden / s->heads, kv = (int64_t)hd * s->kv_heads;
    size_t k = 0;
#define SYN(r, c, norm, ...) do { snprintf(t[k].name, sizeof t[k].name, __VA_ARGS__); \
    t[k].rows = (r); t[k].cols = (c); t[k].is_norm = (norm); k++; } while (0)
    SYN(s->vocab, s->hidden, 0, "model.embed_tokens.weight");
    for (int l = 0; l < s->layers; l++) {
        SYN(s->hidden, 0, 1, "model.layers.%d.input_layernorm.weight", l);
        SYN(s->hidden, s->hidden, 0, "model.layers.%d.self_attn.q_proj.weight", l);
        SYN(kv, s->hidden, 0, "model.layers.%d.self_attn.k_proj.weight", l);
        SYN(kv, s->hidden, 0, "model.layers.%d.self_attn.v_proj.weight", l);
        SYN(s->hidden, s->hidden, 0, "model.layers.%d.self_attn.o_proj.weight", l);
        SYN(s->hidden, 0, 1, "model.layers.%d.post_attention_layernorm.weight", l);
        SYN(s->intermediate, s->hidden, 0, "model.layers.%d.mlp.gate_proj.weight", l);
        SYN(s->intermediate, s->hidden, 0, "model.layers.%d.mlp.up_proj.weight", l);
        SYN(s->hidden, s->intermediate, 0, "model.layers.%d.mlp.down_proj.weight", l);
    }
    SYN(s->hidden, 0, 1, "model.norm.weight");
    SYN(s->vocab, s->hidden, 0, "lm_head.weight");
#undef SYN
    *n = k;
    return t;
}

uint64_t zs_synth_bytes(const zs_synth_shape_t *s) {
    size_t n;
    synth_tensor_t *t = synth_list(s, &n);
    uint64_t b = 0;
    for (size_t i = 0; t && i < n; i++) b += synth_tensor_bytes(&t[i]);
    free(t);
    return b;
}

static uint64_t synth_next(uint64_t *x) { /* splitmix64 */
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Fills n bf16 values: norms 1.0, weights with |w| in [2^-9, 2^-5) and a random sign. */
static void synth_fill(uint16_t *out, size_t n, int is_norm, uint64_t *state) {
    if (is_norm) {
        for (size_t i = 0; i < n; i++) out[i] = 0x3F80;
        return;
    }
    for (size_t i = 0; i < n; i += 4) {
        uint64_t r = synth_next(state);
        for (size_t j = 0; j < 4 && i + j < n; j++) {
            uint16_t b = (uint16_t)(r >> (16 * j));
            uint16_t sign = b & 0x8000, exp = (uint16_t)(118 + (b >> 7) % 4), man = b & 0x7F;
            out[i + j] = (uint16_t)(sign | (exp << 7) | man);
        }
    }
}

static int synth_cmp_name(const void *a, const void *b) {
    return strcmp(((const synth_tensor_t *const *)a)[0]->name, ((const synth_tensor_t *const *)b)[0]->name);
}

typedef struct synth_shard {
    char path[PATH_MAX];
    synth_tensor_t **tensors;
    size_t n;
    int rc;
    zs_err_t err;
} synth_shard_t;

static int synth_write_all(int fd, const void *buf, size_t len, uint64_t off, const char *path, zs_err_t *err) {
    size_t done = 0;
    while (done < len) {
        ssize_t w = pwrite(fd, (const char *)buf + done, len - done, (off_t)(off + done));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0)
            return zs_err_set(err, zs_status_from_errno(errno), "write %s at offset %llu: %s", path,
                              (unsigned long long)(off + done), strerror(errno));
        done += (size_t)w;
    }
    return ZS_OK;
}

/* Header JSON for one shard, padded with spaces to a multiple of 8 bytes. */
static char *synth_header(synth_shard_t *sh, size_t *len) {
    json_t *root = json_object();
    if (root == NULL) return NULL;
    json_t *meta = json_pack("{s:s}", "format", "pt");
    int bad = meta == NULL || json_object_set_new(root, "__metadata__", meta) != 0;
    for (size_t i = 0; i < sh->n && !bad; i++) {
        synth_tensor_t *t = sh->tensors[i];
        json_t *shape = t->cols ? json_pack("[I,I]", (json_int_t)t->rows, (json_int_t)t->cols)
                                : json_pack("[I]", (json_int_t)t->rows);
        json_t *e = json_pack("{s:s,s:o,s:[I,I]}", "dtype", "BF16", "shape", shape, "data_offsets",
                              (json_int_t)t->offset, (json_int_t)(t->offset + synth_tensor_bytes(t)));
        bad = e == NULL || json_object_set_new(root, t->name, e) != 0;
    }
    char *s = bad ? NULL : json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (s == NULL) return NULL;
    size_t n = strlen(s), padded = (n + 7) / 8 * 8;
    char *p = realloc(s, padded + 1);
    if (p == NULL) {
        free(s);
        return NULL;
    }
    memset(p + n, ' ', padded - n);
    p[padded] = '\0';
    *len = padded;
    return p;
}

static void *synth_shard_main(void *arg) {
    synth_shard_t *sh = arg;
    size_t hlen = 0;
    char *hdr = synth_header(sh, &hlen);
    int fd = -1;
    uint16_t *buf = NULL;
    const size_t bufn = 4u << 20; /* values per write: 8 MiB */
    if (hdr == NULL || (buf = malloc(bufn * 2)) == NULL) {
        sh->rc = zs_err_set(&sh->err, ZS_ENOMEM, "%s: out of memory", sh->path);
        goto done;
    }
    fd = open(sh->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        sh->rc = zs_err_set(&sh->err, zs_status_from_errno(errno), "create %s: %s", sh->path, strerror(errno));
        goto done;
    }
    unsigned char lenb[8];
    for (int i = 0; i < 8; i++) lenb[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    sh->rc = synth_write_all(fd, lenb, 8, 0, sh->path, &sh->err);
    if (sh->rc == ZS_OK) sh->rc = synth_write_all(fd, hdr, hlen, 8, sh->path, &sh->err);
    uint64_t base = 8 + hlen;
    for (size_t i = 0; i < sh->n && sh->rc == ZS_OK; i++) {
        synth_tensor_t *t = sh->tensors[i];
        uint64_t vals = synth_tensor_bytes(t) / 2, state = t->seed;
        for (uint64_t v = 0; v < vals && sh->rc == ZS_OK; v += bufn) {
            size_t m = vals - v < bufn ? (size_t)(vals - v) : bufn;
            synth_fill(buf, m, t->is_norm, &state);
            sh->rc = synth_write_all(fd, buf, m * 2, base + t->offset + v * 2, sh->path, &sh->err);
        }
    }
    if (sh->rc == ZS_OK && close(fd) != 0)
        sh->rc = zs_err_set(&sh->err, ZS_EIO, "close %s: %s", sh->path, strerror(errno));
    else if (sh->rc != ZS_OK)
        close(fd);
    fd = -1;
done:
    if (fd >= 0) close(fd);
    free(hdr);
    free(buf);
    return NULL;
}

static int synth_write_text(const char *dir, const char *name, const char *text, zs_err_t *err) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (f == NULL) return zs_err_set(err, zs_status_from_errno(errno), "create %s: %s", path, strerror(errno));
    int ok = fputs(text, f) >= 0;
    ok = (fclose(f) == 0) && ok;
    return ok ? ZS_OK : zs_err_set(err, ZS_EIO, "write %s failed", path);
}

static int synth_write_json(const char *dir, const char *name, json_t *j, zs_err_t *err) {
    if (j == NULL) return zs_err_set(err, ZS_ENOMEM, "%s: out of memory", name);
    char *s = json_dumps(j, JSON_INDENT(2));
    json_decref(j);
    if (s == NULL) return zs_err_set(err, ZS_ENOMEM, "%s: out of memory", name);
    int rc = synth_write_text(dir, name, s, err);
    free(s);
    return rc;
}

int zs_synth_write_tokenizer(const char *dir, int vocab, int *bos, int *eos, int *eot, zs_err_t *err);

static json_t *synth_config(const zs_synth_shape_t *s, int bos, int eos, int eot) {
    return json_pack("{s:[s],s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:f,s:f,s:i,s:i,s:[i,i],s:b,s:s,s:s,s:b}",
                     "architectures", "LlamaForCausalLM", "model_type", "llama",
                     "hidden_size", s->hidden, "intermediate_size", s->intermediate,
                     "num_hidden_layers", s->layers, "num_attention_heads", s->heads,
                     "num_key_value_heads", s->kv_heads, "vocab_size", s->vocab,
                     "rms_norm_eps", 1e-5, "rope_theta", 500000.0, "max_position_embeddings", 8192,
                     "bos_token_id", bos, "eos_token_id", eos, eot, "tie_word_embeddings", 0,
                     "torch_dtype", "bfloat16", "hidden_act", "silu", "attention_bias", 0);
}

/* mkdir -p */
static int synth_mkdirs(const char *dir, zs_err_t *err) {
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path)
        return zs_err_set(err, ZS_ERANGE, "path too long: %s", dir);
    for (char *p = path + 1;; p++) {
        char c = *p;
        if (c != '/' && c != '\0') continue;
        *p = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST)
            return zs_err_set(err, zs_status_from_errno(errno), "mkdir %s: %s", path, strerror(errno));
        *p = c;
        if (c == '\0') break;
    }
    return ZS_OK;
}

int zs_synth_write(const char *dir, const zs_synth_shape_t *s, uint64_t seed, zs_err_t *err) {
    int mk = synth_mkdirs(dir, err);
    if (mk != ZS_OK) return mk;
    size_t n;
    synth_tensor_t *t = synth_list(s, &n);
    synth_shard_t *sh = calloc((size_t)s->shards, sizeof *sh);
    synth_tensor_t **order = calloc(n, sizeof *order);
    pthread_t *th = calloc((size_t)s->shards, sizeof *th);
    int rc = ZS_OK;
    if (t == NULL || sh == NULL || order == NULL || th == NULL) {
        rc = zs_err_set(err, ZS_ENOMEM, "out of memory");
        goto done;
    }
    /* Split the model-ordered list into shards of about equal bytes. */
    uint64_t total = 0, acc = 0;
    for (size_t i = 0; i < n; i++) total += synth_tensor_bytes(&t[i]);
    for (size_t i = 0; i < n; i++) {
        int shard = (int)((acc * (uint64_t)s->shards) / (total ? total : 1));
        t[i].shard = shard < s->shards ? shard : s->shards - 1;
        t[i].seed = seed * 1000003u + i;
        acc += synth_tensor_bytes(&t[i]);
        order[i] = &t[i];
    }
    qsort(order, n, sizeof *order, synth_cmp_name);
    json_t *map = json_object();
    for (int k = 0; k < s->shards; k++) {
        snprintf(sh[k].path, sizeof sh[k].path, "%s/model-%05d-of-%05d.safetensors", dir, k + 1, s->shards);
        sh[k].tensors = calloc(n, sizeof *sh[k].tensors);
        if (sh[k].tensors == NULL) rc = zs_err_set(err, ZS_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n && rc == ZS_OK; i++) {
        synth_shard_t *x = &sh[order[i]->shard];
        uint64_t off = 0;
        if (x->n > 0) off = x->tensors[x->n - 1]->offset + synth_tensor_bytes(x->tensors[x->n - 1]);
        order[i]->offset = off;
        x->tensors[x->n++] = order[i];
        const char *base = strrchr(x->path, '/') + 1;
        if (map == NULL || json_object_set_new(map, order[i]->name, json_string(base)) != 0)
            rc = zs_err_set(err, ZS_ENOMEM, "out of memory");
    }
    int started = 0;
    for (int k = 0; k < s->shards && rc == ZS_OK; k++, started++)
        if (pthread_create(&th[k], NULL, synth_shard_main, &sh[k]) != 0)
            rc = zs_err_set(err, ZS_ENOMEM, "pthread_create failed");
    for (int k = 0; k < started; k++) {
        pthread_join(th[k], NULL);
        if (sh[k].rc != ZS_OK && rc == ZS_OK) {
            rc = sh[k].rc;
            if (err) *err = sh[k].err;
        }
    }
    if (rc == ZS_OK)
        rc = synth_write_json(dir, "model.safetensors.index.json",
                              json_pack("{s:{s:I},s:O}", "metadata", "total_size", (json_int_t)total,
                                        "weight_map", map), err);
    int bos = 0, eos = 0, eot = 0;
    if (rc == ZS_OK) rc = zs_synth_write_tokenizer(dir, s->vocab, &bos, &eos, &eot, err);
    if (rc == ZS_OK) rc = synth_write_json(dir, "config.json", synth_config(s, bos, eos, eot), err);
    json_decref(map);
done:
    for (int k = 0; sh && k < s->shards; k++) free(sh[k].tensors);
    free(sh);
    free(order);
    free(th);
    free(t);
    return rc;
}
