/* Server configuration: defaults, model list, and the JSON config file. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/file_read.h"
#include "zerostart/server.h"

void zs_server_config_init(zs_server_config_t *c) {
    memset(c, 0, sizeof *c);
    c->max_queue = 256;
    c->max_batch = 64;
    c->step_tokens = 256;
    c->max_body = (size_t)4 << 20;
    c->max_connections = 512;
    c->shutdown_timeout_s = 30;
    c->log_level = ZS_LOG_INFO;
    c->keep_alive_s = 300;
    c->probe_bandwidth = 1;
    c->kv_host_bytes = (uint64_t)2 << 30;
    c->prewarm_threshold = 0.5;
    c->warmup = -1;
}

int zs_server_parse_switch(const char *s, int allow_auto, int *out) {
    if (strcmp(s, "on") == 0 || strcmp(s, "true") == 0 || strcmp(s, "1") == 0) *out = 1;
    else if (strcmp(s, "off") == 0 || strcmp(s, "false") == 0 || strcmp(s, "0") == 0) *out = 0;
    else if (allow_auto && strcmp(s, "auto") == 0) *out = -1;
    else return -1;
    return 0;
}

/* "prewarm" / "warmup": a boolean or "on" / "off" (/ "auto"). */
static int get_switch(json_t *v, const char *what, const char *key, int allow_auto, int *out, zs_err_t *err) {
    if (json_is_boolean(v)) {
        *out = json_is_true(v);
        return 0;
    }
    if (json_is_string(v) && zs_server_parse_switch(json_string_value(v), allow_auto, out) == 0) return 0;
    return zs_err_set(err, ZS_EINVAL, "%s: '%s' must be true, false, \"on\" or \"off\"%s", what, key,
                      allow_auto ? " or \"auto\"" : "");
}

int zs_server_parse_device(const char *s, zs_device_t *dev, int *any, zs_err_t *err) {
    *any = 0;
    if (strcmp(s, "cuda:any") == 0 || strcmp(s, "auto") == 0) {
        *any = 1;
        dev->kind = zs_cuda_device_count() > 0 || strcmp(s, "cuda:any") == 0 ? ZS_DEV_CUDA : ZS_DEV_CPU;
        dev->index = 0;
        if (dev->kind == ZS_DEV_CPU) *any = 0;
        return 0;
    }
    return zs_device_parse(s, dev, err);
}

void zs_server_config_free(zs_server_config_t *c) {
    free(c->host);
    for (int i = 0; i < c->napi_keys; i++) free(c->api_keys[i]);
    c->napi_keys = 0;
    free(c->pool_dir);
    c->pool_dir = NULL;
    free(c->kv_disk_dir);
    c->kv_disk_dir = NULL;
    for (int i = 0; i < c->nmodels; i++) {
        free(c->models[i].name);
        free(c->models[i].path);
    }
    c->host = NULL;
    c->nmodels = 0;
}

int zs_server_config_add_api_key(zs_server_config_t *c, const char *key, zs_err_t *err) {
    if (key == NULL || key[0] == '\0' || strlen(key) > 4096)
        return zs_err_set(err, ZS_EINVAL, "config: an API key must be 1 to 4096 characters");
    for (const char *p = key; *p; p++)
        if ((unsigned char)*p <= ' ' || (unsigned char)*p == 127)
            return zs_err_set(err, ZS_EINVAL, "config: an API key must not contain spaces or control characters");
    for (int i = 0; i < c->napi_keys; i++)
        if (strcmp(c->api_keys[i], key) == 0) return 0;
    if (c->napi_keys >= ZS_SERVER_MAX_API_KEYS)
        return zs_err_set(err, ZS_ERANGE, "config: more than %d API keys", ZS_SERVER_MAX_API_KEYS);
    if ((c->api_keys[c->napi_keys] = strdup(key)) == NULL) return zs_err_set(err, ZS_ENOMEM, "config: out of memory");
    c->napi_keys++;
    return 0;
}

static int name_ok(const char *s) {
    if (*s == 0 || strlen(s) > 128) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              strchr("._-:/@+", *s)))
            return 0;
    return 1;
}

int zs_server_config_add_model(zs_server_config_t *c, const char *name, const char *path,
                               zs_err_t *err) {
    if (c->nmodels >= ZS_SERVER_MAX_MODELS)
        return zs_err_set(err, ZS_ERANGE, "config: more than %d models", ZS_SERVER_MAX_MODELS);
    if (path == NULL || *path == 0) return zs_err_set(err, ZS_EINVAL, "config: empty model path");
    if (name == NULL) {
        const char *end = path + strlen(path);
        while (end > path && end[-1] == '/') end--;
        const char *b = end;
        while (b > path && b[-1] != '/') b--;
        char tmp[129];
        size_t n = (size_t)(end - b) < 128 ? (size_t)(end - b) : 128;
        memcpy(tmp, b, n);
        tmp[n] = 0;
        for (char *q = tmp; *q; q++)
            if (!name_ok((char[]){*q, 0})) *q = '_';
        return zs_server_config_add_model(c, n ? tmp : "model", path, err);
    }
    if (!name_ok(name))
        return zs_err_set(err, ZS_EINVAL, "config: model name '%.140s' must be 1-128 characters "
                          "of [A-Za-z0-9._-:/@+]", name);
    for (int i = 0; i < c->nmodels; i++)
        if (strcmp(c->models[i].name, name) == 0)
            return zs_err_set(err, ZS_EINVAL, "config: model name '%s' given twice", name);
    zs_server_model_cfg_t *m = &c->models[c->nmodels];
    memset(m, 0, sizeof *m);
    m->device.kind = zs_cuda_device_count() > 0 ? ZS_DEV_CUDA : ZS_DEV_CPU; /* as load and run do */
    m->keep_alive_s = -1;
    m->name = strdup(name);
    m->path = strdup(path);
    if (m->name == NULL || m->path == NULL) {
        free(m->name);
        free(m->path);
        return zs_err_set(err, ZS_ENOMEM, "config: out of memory");
    }
    c->nmodels++;
    return 0;
}

static int set_str(char **dst, json_t *v, const char *what, const char *key, zs_err_t *err) {
    if (!json_is_string(v)) return zs_err_set(err, ZS_EINVAL, "%s: '%s' must be a string", what, key);
    char *s = strdup(json_string_value(v));
    if (s == NULL) return zs_err_set(err, ZS_ENOMEM, "%s: out of memory", what);
    free(*dst);
    *dst = s;
    return 0;
}

static int get_seconds(json_t *v, const char *what, const char *key, double *out, zs_err_t *err) {
    if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 31536000)
        return zs_err_set(err, ZS_EINVAL, "%s: '%s' must be seconds in [0, 31536000]", what, key);
    *out = json_number_value(v);
    return 0;
}

static int get_int(json_t *v, const char *what, const char *key, long long lo, long long hi,
                   long long *out, zs_err_t *err) {
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return zs_err_set(err, ZS_EINVAL, "%s: '%s' must be an integer in [%lld, %lld]", what, key,
                          lo, hi);
    *out = json_integer_value(v);
    return 0;
}

/* "64M", "1GiB" or a byte count */
static int get_size(json_t *v, const char *what, const char *key, size_t *out, zs_err_t *err) {
    if (json_is_integer(v) && json_integer_value(v) > 0) {
        *out = (size_t)json_integer_value(v);
        return 0;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end;
        errno = 0;
        double d = strtod(s, &end);
        double mul = 1;
        if (*end == 'K' || *end == 'k') mul = 1024.0, end++;
        else if (*end == 'M' || *end == 'm') mul = 1048576.0, end++;
        else if (*end == 'G' || *end == 'g') mul = 1073741824.0, end++;
        if (mul > 1 && (strcmp(end, "iB") == 0 || strcmp(end, "B") == 0)) end += strlen(end);
        if (end != s && *end == 0 && errno == 0 && d > 0 && d * mul < 1e15) {
            *out = (size_t)(d * mul);
            return 0;
        }
    }
    return zs_err_set(err, ZS_EINVAL, "%s: '%s' must be a size such as 4096, \"64M\" or \"2GiB\"",
                      what, key);
}

int zs_server_config_load_json(zs_server_config_t *c, const char *json, size_t len,
                               const char *what, zs_err_t *err) {
    json_error_t je;
    json_t *root = json_loadb(json, len, 0, &je);
    if (root == NULL)
        return zs_err_set(err, ZS_EFORMAT, "%s: line %d: %s", what, je.line, je.text);
    int rc = 0;
    long long v;
    const char *key;
    json_t *val;
    if (!json_is_object(root)) {
        rc = zs_err_set(err, ZS_EFORMAT, "%s: the config must be a JSON object", what);
        goto out;
    }
    json_object_foreach(root, key, val) {
        if (strcmp(key, "host") == 0) rc = set_str(&c->host, val, what, key, err);
        else if (strcmp(key, "api_key") == 0) {
            if (!json_is_string(val)) rc = zs_err_set(err, ZS_EINVAL, "%s: 'api_key' must be a string", what);
            else rc = zs_server_config_add_api_key(c, json_string_value(val), err);
        } else if (strcmp(key, "api_keys") == 0) {
            size_t i;
            json_t *k;
            if (!json_is_array(val)) rc = zs_err_set(err, ZS_EINVAL, "%s: 'api_keys' must be an array of strings", what);
            json_array_foreach(val, i, k) {
                if (rc) break;
                if (!json_is_string(k)) rc = zs_err_set(err, ZS_EINVAL, "%s: api_keys[%zu] must be a string", what, i);
                else rc = zs_server_config_add_api_key(c, json_string_value(k), err);
            }
        }
        else if (strcmp(key, "port") == 0) {
            if (!(rc = get_int(val, what, key, 0, 65535, &v, err))) c->port = (uint16_t)v;
        } else if (strcmp(key, "max_queue") == 0) {
            if (!(rc = get_int(val, what, key, 0, 1000000, &v, err))) c->max_queue = (int)v;
        } else if (strcmp(key, "max_batch") == 0) {
            if (!(rc = get_int(val, what, key, 1, 4096, &v, err))) c->max_batch = (int)v;
        } else if (strcmp(key, "step_tokens") == 0) {
            if (!(rc = get_int(val, what, key, 1, 65536, &v, err))) c->step_tokens = (int)v;
        } else if (strcmp(key, "max_connections") == 0) {
            if (!(rc = get_int(val, what, key, 1, 100000, &v, err))) c->max_connections = (int)v;
        } else if (strcmp(key, "max_body") == 0) {
            rc = get_size(val, what, key, &c->max_body, err);
        } else if (strcmp(key, "shutdown_timeout") == 0) {
            if (!json_is_number(val) || json_number_value(val) < 0 || json_number_value(val) > 86400)
                rc = zs_err_set(err, ZS_EINVAL, "%s: 'shutdown_timeout' must be seconds in [0, 86400]", what);
            else c->shutdown_timeout_s = json_number_value(val);
        } else if (strcmp(key, "pool_dir") == 0) {
            rc = set_str(&c->pool_dir, val, what, key, err);
        } else if (strcmp(key, "pool_size") == 0 || strcmp(key, "device_mem") == 0) {
            size_t sz = 0;
            if (json_is_integer(val) && json_integer_value(val) == 0) sz = 0;
            else rc = get_size(val, what, key, &sz, err);
            if (!rc) *(key[0] == 'p' ? &c->pool_size : &c->device_mem) = sz;
        } else if (strcmp(key, "kv_host") == 0 || strcmp(key, "kv_disk_size") == 0) {
            size_t sz = 0;
            if (json_is_integer(val) && json_integer_value(val) == 0) sz = 0;
            else rc = get_size(val, what, key, &sz, err);
            if (!rc) *(strcmp(key, "kv_host") == 0 ? &c->kv_host_bytes : &c->kv_disk_bytes) = sz;
        } else if (strcmp(key, "kv_disk") == 0) {
            rc = set_str(&c->kv_disk_dir, val, what, key, err);
        } else if (strcmp(key, "keep_alive") == 0) {
            rc = get_seconds(val, what, key, &c->keep_alive_s, err);
        } else if (strcmp(key, "prewarm") == 0) {
            rc = get_switch(val, what, key, 0, &c->prewarm, err);
        } else if (strcmp(key, "warmup") == 0) {
            rc = get_switch(val, what, key, 1, &c->warmup, err);
        } else if (strcmp(key, "prewarm_threshold") == 0) {
            if (!json_is_number(val) || !(json_number_value(val) > 0 && json_number_value(val) <= 1))
                rc = zs_err_set(err, ZS_EINVAL, "%s: 'prewarm_threshold' must be a probability in (0, 1]", what);
            else c->prewarm_threshold = json_number_value(val);
        } else if (strcmp(key, "models") == 0) {
            if (!json_is_array(val) || json_array_size(val) == 0) {
                rc = zs_err_set(err, ZS_EINVAL, "%s: 'models' must be a non-empty array", what);
                break;
            }
            size_t i;
            json_t *m;
            json_array_foreach(val, i, m) {
                json_t *path = json_object_get(m, "path"), *name = json_object_get(m, "name");
                if (!json_is_object(m) || !json_is_string(path)) {
                    rc = zs_err_set(err, ZS_EINVAL, "%s: models[%zu] needs a string 'path'", what, i);
                    break;
                }
                if (name && !json_is_string(name)) {
                    rc = zs_err_set(err, ZS_EINVAL, "%s: models[%zu].name must be a string", what, i);
                    break;
                }
                if ((rc = zs_server_config_add_model(c, name ? json_string_value(name) : NULL,
                                                     json_string_value(path), err)))
                    break;
                zs_server_model_cfg_t *mc = &c->models[c->nmodels - 1];
                json_t *x;
                if ((x = json_object_get(m, "ctx")) &&
                    (rc = get_int(x, what, "models[].ctx", 1, INT32_MAX, &v, err)) == 0)
                    mc->ctx = v;
                if (!rc && (x = json_object_get(m, "kv_mem")))
                    rc = get_size(x, what, "models[].kv_mem", &mc->kv_bytes, err);
                if (!rc && (x = json_object_get(m, "keep_alive")))
                    rc = get_seconds(x, what, "models[].keep_alive", &mc->keep_alive_s, err);
                if (!rc && (x = json_object_get(m, "device"))) {
                    if (!json_is_string(x))
                        rc = zs_err_set(err, ZS_EINVAL, "%s: models[%zu].device must be a string", what, i);
                    else
                        rc = zs_server_parse_device(json_string_value(x), &mc->device, &mc->any_gpu, err);
                }
                if (rc) break;
            }
        } /* other keys are ignored */
        if (rc) break;
    }
out:
    json_decref(root);
    return rc;
}

int zs_server_config_load(zs_server_config_t *c, const char *path, zs_err_t *err) {
    char *buf = NULL;
    size_t len = 0;
    int rc = zs_read_file(path, (size_t)16 << 20, &buf, &len, err);
    if (rc == 0) rc = zs_server_config_load_json(c, buf, len, path, err);
    free(buf);
    return rc;
}
