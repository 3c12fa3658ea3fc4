/* libFuzzer target: arbitrary bytes as a kvstore block file. The bytes are placed in a disk
 * tier directory under the name of the key they claim, the tier is opened (index scan) and the
 * block read back. Nothing may crash, and a block is only returned if it passes every check,
 * which this target re-derives independently. */
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "kvstore/kv_internal.h"
#include "zerostart/kvstore.h"

#define FUZZ_LAYOUT "fuzz-layout bs=4"

static char g_dir[64];

static void clean_shard(const char *shard) {
    DIR *d = opendir(shard);
    if (d == NULL) return;
    struct dirent *de;
    char p[512];
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        snprintf(p, sizeof p, "%s/%s", shard, de->d_name);
        unlink(p);
    }
    closedir(d);
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb; (void)flag; (void)ftw;
    return remove(p);
}
static void remove_dir(void) { nftw(g_dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (g_dir[0] == '\0') {
        snprintf(g_dir, sizeof g_dir, "/tmp/zs-fuzz-kvstore-XXXXXX");
        if (mkdtemp(g_dir) == NULL) abort();
        atexit(remove_dir);
    }
    /* The parser alone. */
    kvf_meta_t m;
    int parsed = kvf_parse(data, size, "fuzz", &m, NULL) == ZS_OK;

    zs_kv_key_t key;
    zs_kv_ns_t ns;
    memset(&key, 0xab, sizeof key);
    memset(&ns, 0, sizeof ns);
    if (size >= 80) {
        memcpy(ns.b, data + 16, 32);
        memcpy(key.b, data + 48, 32);
    }
    char hex[65], shard[128], path[256];
    zs_kv_key_hex(&key, hex);
    snprintf(shard, sizeof shard, "%s/%.2s", g_dir, hex);
    snprintf(path, sizeof path, "%s/%s.kvb", shard, hex);
    mkdir(g_dir, 0755);
    mkdir(shard, 0755);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) abort();
    if (size > 0 && write(fd, data, size) != (ssize_t)size) abort();
    close(fd);

    zs_kv_disk_opts_t o = {.dir = g_dir, .layout = FUZZ_LAYOUT, .no_fsync = 1};
    zs_kv_disk_t *d = NULL;
    if (zs_kv_disk_open(&o, &d, NULL) != ZS_OK) abort();
    uint8_t *buf = malloc(size + 1);
    if (buf == NULL) abort();
    size_t len = 0;
    int rc = zs_kv_disk_get(d, &ns, &key, buf, size, &len, NULL);
    if (rc == ZS_OK) {
        /* Accepted: it must pass every check, re-derived here. */
        if (!parsed || size < KVF_HDR_BYTES || len != size - KVF_HDR_BYTES || m.payload_bytes != len) abort();
        if (memcmp(m.key.b, key.b, 32) != 0 || memcmp(m.ns.b, ns.b, 32) != 0) abort();
        if (strcmp(m.layout, FUZZ_LAYOUT) != 0 || memcmp(buf, data + KVF_HDR_BYTES, len) != 0) abort();
        /* header_sum: SHA-256 of the header with that field zeroed; payload digest: XXH3-128
         * big-endian in the first 16 bytes of its field, zeros after */
        uint8_t z[KVF_HDR_BYTES], sum[32];
        unsigned int ol = 0;
        memcpy(z, data, KVF_HDR_BYTES);
        memset(z + 224, 0, 32);
        EVP_MD_CTX *c = EVP_MD_CTX_new();
        if (c == NULL || EVP_DigestInit_ex(c, EVP_sha256(), NULL) != 1 || EVP_DigestUpdate(c, z, sizeof z) != 1 ||
            EVP_DigestFinal_ex(c, sum, &ol) != 1)
            abort();
        EVP_MD_CTX_free(c);
        if (memcmp(sum, data + 224, 32) != 0) abort();
        XXH128_hash_t h = XXH3_128bits(buf, len);
        for (int i = 0; i < 8; i++)
            if (data[256 + i] != (uint8_t)(h.high64 >> (56 - 8 * i)) ||
                data[264 + i] != (uint8_t)(h.low64 >> (56 - 8 * i)))
                abort();
        for (int i = 272; i < 288; i++)
            if (data[i] != 0) abort();
    } else if (access(path, F_OK) == 0 && rc != ZS_ENOENT && rc != ZS_ERANGE) {
        abort(); /* a rejected file must be gone */
    }
    free(buf);
    zs_kv_disk_close(d);
    clean_shard(shard);
    return 0;
}
