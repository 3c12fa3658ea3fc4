/* `zerostart serve`: the OpenAI-compatible HTTP server. Parses options (and an optional JSON
 * config file listing models), loads the models, serves until SIGTERM/SIGINT, then shuts
 * down gracefully (stop accepting, finish in-flight requests within the deadline). */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "zerostart/server.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: zerostart serve [MODEL_DIR] [options]\n"
            "  --name NAME            model id clients send as \"model\" (default: directory name)\n"
            "  --host H               bind address (default 127.0.0.1)\n"
            "  --port P               port (default 8000; 0 = any free port)\n"
            "  --device cpu|cuda:N    where the weights and the engine run (default cuda:0 if usable, else cpu)\n"
            "  --api-key KEY          require 'Authorization: Bearer KEY' on /v1 (or $ZEROSTART_API_KEY);\n"
            "                         repeat for several keys: each is a tenant of the KV cache\n"
            "  --max-queue N          waiting requests per model before 503 (default 256)\n"
            "  --max-batch N          running sequences per model (default 64)\n"
            "  --step-tokens N        tokens per scheduler step (default 256)\n"
            "  --ctx N                context length (default: the model's)\n"
            "  --kv-mem SIZE          KV cache memory, e.g. 512M (default 64M)\n"
            "  --threads N            CPU backend threads (default: all cores)\n"
            "  --max-body SIZE        request body limit (default 4M)\n"
            "  --shutdown-timeout S   grace period for in-flight requests at SIGTERM (default 30)\n"
            "  --pool-size SIZE       hot model pool capacity, e.g. 40G (default 0: no pool)\n"
            "  --pool-dir DIR         pool directory (default $ZS_POOL_DIR or /dev/shm/zerostart-pool)\n"
            "  --keep-alive S         idle seconds before a model scales to zero (default 300; 0 = never)\n"
            "  --device-mem SIZE      bytes of weights+KV a device may hold (default: GPU free memory; cpu unlimited)\n"
            "  --kv-host SIZE         KV store host tier per model: prefixes leaving the GPU cache (default 2G; 0 = off)\n"
            "  --kv-disk DIR          KV store disk tier directory: prefixes survive restarts (default: none)\n"
            "  --kv-disk-size SIZE    disk tier capacity per model (default 0: unlimited)\n"
            "  --prewarm on|off       bring scaled-to-zero models back before their predicted next request,\n"
            "                         while a device is idle (default off)\n"
            "  --prewarm-threshold P  probability of a request within the start-up lead time that triggers a\n"
            "                         pre-warm, in (0, 1] (default 0.5)\n"
            "  --warmup auto|on|off   kernel warm-up after each model's first start, never on a request path\n"
            "                         (default auto: models on a GPU)\n"
            "  --config FILE          JSON config (server options and a \"models\" list)\n"
            "  --log-level L          error|warn|info|debug (default info)\n");
}

static void log_stderr(void *ctx, zs_log_level_t level, const char *line) {
    (void)ctx;
    (void)level;
    fprintf(stderr, "%s\n", line);
}

int zs_cmd_serve(int argc, char **argv) {
    zs_server_config_t cfg;
    zs_server_config_init(&cfg);
    cfg.port = 8000;
    zs_err_t err = {0};
    const char *dir = NULL, *name = NULL, *device = NULL, *config = NULL;
    long ctx = 0;
    uint64_t kv = 0;
    int rc = 2;
    int port_given = 0, pool_given = 0, dmem_given = 0, ka_given = 0, kvh_given = 0, kvd_given = 0;
    int pw_given = 0, pwt_given = 0, wu_given = 0;
    double keep_alive = -1;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n;
        uint64_t sz;
        if (strcmp(o, "-h") == 0 || strcmp(o, "--help") == 0) {
            usage(stdout);
            zs_server_config_free(&cfg);
            return 0;
        }
        if (o[0] != '-') {
            if (dir) {
                fprintf(stderr, "zerostart serve: more than one MODEL_DIR ('%s')\n", o);
                goto out;
            }
            dir = o;
            continue;
        }
        if (v == NULL) {
            fprintf(stderr, "zerostart serve: %s needs a value\n\n", o);
            usage(stderr);
            goto out;
        }
        i++;
#define INT_OPT(flag, lo, hi, dst)                                                         \
    if (strcmp(o, flag) == 0) {                                                            \
        if (zs_cli_parse_int(v, lo, hi, &n) != 0) {                                        \
            fprintf(stderr, "zerostart serve: %s wants %ld..%ld, got '%s'\n", flag, (long)(lo), \
                    (long)(hi), v);                                                        \
            goto out;                                                                      \
        }                                                                                  \
        dst;                                                                               \
        continue;                                                                          \
    }
#define SIZE_OPT(flag, dst)                                                                \
    if (strcmp(o, flag) == 0) {                                                            \
        if (zs_cli_parse_size(v, &sz) != 0 || sz == 0) {                                   \
            fprintf(stderr, "zerostart serve: %s wants a size such as 512M, got '%s'\n", flag, v); \
            goto out;                                                                      \
        }                                                                                  \
        dst;                                                                               \
        continue;                                                                          \
    }
        INT_OPT("--port", 0, 65535, (cfg.port = (uint16_t)n, port_given = 1))
        INT_OPT("--max-queue", 0, 1000000, cfg.max_queue = (int)n)
        INT_OPT("--max-batch", 1, 4096, cfg.max_batch = (int)n)
        INT_OPT("--step-tokens", 1, 65536, cfg.step_tokens = (int)n)
        INT_OPT("--ctx", 2, 1L << 30, ctx = n)
        INT_OPT("--threads", 0, 1024, cfg.threads = (int)n)
        INT_OPT("--shutdown-timeout", 0, 86400, cfg.shutdown_timeout_s = (double)n)
        INT_OPT("--step-delay-ms", 0, 10000, cfg.step_delay_ms = (int)n)
        INT_OPT("--kv-read-delay-ms", 0, 10000, cfg.kv_read_delay_ms = (int)n)
        SIZE_OPT("--kv-mem", kv = sz)
        SIZE_OPT("--max-body", cfg.max_body = (size_t)sz)
        SIZE_OPT("--device-mem", (cfg.device_mem = sz, dmem_given = 1))
        if (strcmp(o, "--pool-size") == 0) {
            if (zs_cli_parse_size(v, &sz) != 0) {
                fprintf(stderr, "zerostart serve: --pool-size wants a size such as 40G, got '%s'\n", v);
                goto out;
            }
            cfg.pool_size = sz;
            pool_given = 1;
            continue;
        }
        if (strcmp(o, "--kv-host") == 0 || strcmp(o, "--kv-disk-size") == 0) {
            if (zs_cli_parse_size(v, &sz) != 0) {
                fprintf(stderr, "zerostart serve: %s wants a size such as 8G (0 = %s), got '%s'\n", o,
                        o[5] == 'h' ? "off" : "unlimited", v);
                goto out;
            }
            if (o[5] == 'h') cfg.kv_host_bytes = sz, kvh_given = 1;
            else cfg.kv_disk_bytes = sz, kvd_given = 1;
            continue;
        }
        if (strcmp(o, "--kv-no-fsync") == 0) { /* testing aid, undocumented: takes "1" */
            cfg.kv_no_fsync = strcmp(v, "1") == 0;
            continue;
        }
        if (strcmp(o, "--keep-alive") == 0) {
            char *end;
            errno = 0;
            double d = strtod(v, &end);
            if (end == v || *end || errno || !(d >= 0 && d <= 31536000)) {
                fprintf(stderr, "zerostart serve: --keep-alive wants seconds (0 = never), got '%s'\n", v);
                goto out;
            }
            keep_alive = d;
            ka_given = 1;
            continue;
        }
        if (strcmp(o, "--prewarm") == 0 || strcmp(o, "--warmup") == 0) {
            int pw = o[2] == 'p';
            if (zs_server_parse_switch(v, !pw, pw ? &cfg.prewarm : &cfg.warmup) != 0) {
                fprintf(stderr, "zerostart serve: %s wants %s, got '%s'\n", o, pw ? "on|off" : "auto|on|off", v);
                goto out;
            }
            *(pw ? &pw_given : &wu_given) = 1;
            continue;
        }
        if (strcmp(o, "--prewarm-threshold") == 0) {
            char *end;
            errno = 0;
            double d = strtod(v, &end);
            if (end == v || *end || errno || !(d > 0 && d <= 1)) {
                fprintf(stderr, "zerostart serve: --prewarm-threshold wants a probability in (0, 1], got '%s'\n", v);
                goto out;
            }
            cfg.prewarm_threshold = d;
            pwt_given = 1;
            continue;
        }
        if (strcmp(o, "--name") == 0) name = v;
        else if (strcmp(o, "--device") == 0) device = v;
        else if (strcmp(o, "--config") == 0) config = v;
        else if (strcmp(o, "--pool-dir") == 0 || strcmp(o, "--kv-disk") == 0) {
            char **dst = o[2] == 'p' ? &cfg.pool_dir : &cfg.kv_disk_dir;
            free(*dst);
            if ((*dst = strdup(v)) == NULL) {
                fprintf(stderr, "zerostart serve: out of memory\n");
                goto out;
            }
        }
        else if (strcmp(o, "--host") == 0) {
            free(cfg.host);
            if ((cfg.host = strdup(v)) == NULL) {
                fprintf(stderr, "zerostart serve: out of memory\n");
                goto out;
            }
        } else if (strcmp(o, "--api-key") == 0) {
            if (zs_server_config_add_api_key(&cfg, v, &err) != 0) {
                fprintf(stderr, "zerostart serve: --api-key: %s\n", err.msg);
                goto out;
            }
        } else if (strcmp(o, "--log-level") == 0) {
            static const char *const lv[] = {"error", "warn", "info", "debug"};
            int k = 0;
            while (k < 4 && strcmp(v, lv[k]) != 0) k++;
            if (k == 4) {
                fprintf(stderr, "zerostart serve: --log-level wants error|warn|info|debug\n");
                goto out;
            }
            cfg.log_level = (zs_log_level_t)k;
        } else {
            fprintf(stderr, "zerostart serve: unknown option '%s'\n\n", o);
            usage(stderr);
            goto out;
        }
    }
    if (config) {
        /* the file sets defaults; command-line options given above override below */
        zs_server_config_t file;
        zs_server_config_init(&file);
        file.port = cfg.port;
        if (zs_server_config_load(&file, config, &err) != 0) {
            fprintf(stderr, "zerostart serve: %s\n", err.msg);
            zs_server_config_free(&file);
            goto out;
        }
        if (!port_given) cfg.port = file.port;
        if (cfg.host == NULL) cfg.host = file.host, file.host = NULL;
        if (cfg.napi_keys == 0) { /* keys given on the command line replace the file's */
            for (int k = 0; k < file.napi_keys; k++) cfg.api_keys[k] = file.api_keys[k];
            cfg.napi_keys = file.napi_keys;
            file.napi_keys = 0;
        }
        zs_server_config_t def;
        zs_server_config_init(&def);
        if (cfg.max_queue == def.max_queue) cfg.max_queue = file.max_queue;
        if (cfg.max_batch == def.max_batch) cfg.max_batch = file.max_batch;
        if (cfg.step_tokens == def.step_tokens) cfg.step_tokens = file.step_tokens;
        if (cfg.max_body == def.max_body) cfg.max_body = file.max_body;
        if (cfg.shutdown_timeout_s == def.shutdown_timeout_s)
            cfg.shutdown_timeout_s = file.shutdown_timeout_s;
        if (!pool_given) cfg.pool_size = file.pool_size;
        if (!dmem_given) cfg.device_mem = file.device_mem;
        if (!ka_given) cfg.keep_alive_s = file.keep_alive_s;
        if (!pw_given) cfg.prewarm = file.prewarm;
        if (!pwt_given) cfg.prewarm_threshold = file.prewarm_threshold;
        if (!wu_given) cfg.warmup = file.warmup;
        if (cfg.pool_dir == NULL) cfg.pool_dir = file.pool_dir, file.pool_dir = NULL;
        if (cfg.kv_disk_dir == NULL) cfg.kv_disk_dir = file.kv_disk_dir, file.kv_disk_dir = NULL;
        if (!kvh_given) cfg.kv_host_bytes = file.kv_host_bytes;
        if (!kvd_given) cfg.kv_disk_bytes = file.kv_disk_bytes;
        for (int i = 0; i < file.nmodels; i++) cfg.models[cfg.nmodels++] = file.models[i];
        file.nmodels = 0;
        zs_server_config_free(&file);
    }
    if (dir) {
        if (zs_server_config_add_model(&cfg, name, dir, &err) != 0) {
            fprintf(stderr, "zerostart serve: %s\n", err.msg);
            goto out;
        }
        zs_server_model_cfg_t *m = &cfg.models[cfg.nmodels - 1];
        m->ctx = ctx;
        m->kv_bytes = (size_t)kv;
        if (device && zs_server_parse_device(device, &m->device, &m->any_gpu, &err) != 0) {
            fprintf(stderr, "zerostart serve: --device: %s\n", err.msg);
            goto out;
        }
    } else if (name || device || ctx || kv) {
        fprintf(stderr, "zerostart serve: --name/--device/--ctx/--kv-mem need a MODEL_DIR\n");
        goto out;
    }
    if (cfg.nmodels == 0) {
        fprintf(stderr, "zerostart serve: no model: give MODEL_DIR or --config FILE\n\n");
        usage(stderr);
        goto out;
    }
    if (cfg.napi_keys == 0 && getenv("ZEROSTART_API_KEY") && *getenv("ZEROSTART_API_KEY") &&
        zs_server_config_add_api_key(&cfg, getenv("ZEROSTART_API_KEY"), &err) != 0) {
        fprintf(stderr, "zerostart serve: $ZEROSTART_API_KEY: %s\n", err.msg);
        goto out;
    }
    if (ka_given) cfg.keep_alive_s = keep_alive; /* the default of every model without its own */
    if (cfg.step_tokens < cfg.max_batch) cfg.step_tokens = cfg.max_batch;
    cfg.log = log_stderr;

    /* signals: SIGTERM/SIGINT are taken synchronously by this thread (every thread the
     * server starts inherits the blocked mask); broken connections must not kill us */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    int e = pthread_sigmask(SIG_BLOCK, &set, NULL);
    if (e != 0 || signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
        fprintf(stderr, "zerostart serve: cannot set up signals: %s\n", strerror(e ? e : errno));
        rc = 1;
        goto out;
    }
    zs_server_t *srv = NULL;
    if (zs_server_create(&cfg, &srv, &err) != 0 || zs_server_start(srv, &err) != 0) {
        fprintf(stderr, "zerostart serve: %s\n", err.msg);
        zs_server_free(srv);
        rc = 1;
        goto out;
    }
    fprintf(stderr, "zerostart serve: listening on http://%s:%u\n", cfg.host ? cfg.host : "127.0.0.1",
            (unsigned)zs_server_port(srv));
    fflush(stderr);
    int sig = 0;
    while (sigwait(&set, &sig) != 0) {
    }
    fprintf(stderr, "zerostart serve: %s received, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    int cancelled = zs_server_shutdown(srv);
    zs_server_free(srv);
    fprintf(stderr, "zerostart serve: exited cleanly (%d requests cancelled at the deadline)\n",
            cancelled);
    rc = 0;
out:
    zs_server_config_free(&cfg);
    return rc;
}
