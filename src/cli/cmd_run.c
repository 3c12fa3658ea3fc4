/* `zerostart run`: bring a model up (zs_bundle, optionally tensor parallel over several
 * ranks), turn a prompt (optionally through the chat template) into tokens, generate with
 * streaming output, and print the start-up timeline and speeds on stderr. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "common/clock.h"
#include "zerostart/bundle.h"
#include "zerostart/sampling.h"

typedef struct run_args {
    const char *dir, *prompt, *system, *device, *timeline_json;
    int chat, ignore_eos, threads, use_pool, tp;
    zs_pool_opts_t pool;
    long max_tokens;
    uint64_t kv_bytes;
    zs_sampling_params_t sp;
} run_args_t;

static int run_usage(void) {
    fprintf(stderr,
            "usage: zerostart run MODEL_DIR -p PROMPT [--chat] [--system TEXT] [--device cpu|cuda:N]\n"
            "                     [--max-tokens N] [--temperature T] [--top-k K] [--top-p P] [--min-p P]\n"
            "                     [--repetition-penalty R] [--seed S] [--ignore-eos] [--threads N] [--kv SIZE]\n"
            "                     [--pool] [--pool-dir DIR] [--pool-size SIZE] [--timeline-json FILE] [--tp N]\n"
            "  --tp N  tensor parallel over N ranks: GPUs K..K+N-1 with --device cuda:K (default 0), or N\n"
            "          simulated ranks (threads) with --device cpu; the weights are sliced, each byte read once\n");
    return 2;
}

static int parse_float(const char *s, float lo, float hi, float *out) {
    char *end;
    float v = strtof(s, &end);
    if (end == s || *end != '\0' || !(v >= lo && v <= hi)) return -1;
    *out = v;
    return 0;
}

static int parse_run_args(int argc, char **argv, run_args_t *a) {
    zs_sampling_params_default(&a->sp);
    a->sp.temperature = 0; /* greedy unless asked */
    a->max_tokens = 64;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n;
        int bad = 0;
        if (strcmp(o, "--chat") == 0) a->chat = 1;
        else if (strcmp(o, "--pool") == 0) a->use_pool = 1;
        else if (strcmp(o, "--ignore-eos") == 0) a->ignore_eos = 1;
        else if (v == NULL && o[0] == '-') bad = 1;
        else if (strcmp(o, "-p") == 0 || strcmp(o, "--prompt") == 0) a->prompt = argv[++i];
        else if (strcmp(o, "--system") == 0) a->system = argv[++i];
        else if (strcmp(o, "--device") == 0) a->device = argv[++i];
        else if (strcmp(o, "--timeline-json") == 0) a->timeline_json = argv[++i];
        else if (strcmp(o, "--pool-dir") == 0) a->pool.dir = argv[++i], a->use_pool = 1;
        else if (strcmp(o, "--pool-size") == 0) bad = zs_cli_parse_size(argv[++i], &a->pool.capacity), a->use_pool = 1;
        else if (strcmp(o, "--max-tokens") == 0) bad = zs_cli_parse_int(argv[++i], 1, 1 << 20, &a->max_tokens);
        else if (strcmp(o, "--threads") == 0) bad = zs_cli_parse_int(argv[++i], 1, 256, &n) || (a->threads = (int)n, 0);
        else if (strcmp(o, "--tp") == 0) bad = zs_cli_parse_int(argv[++i], 1, ZS_TP_MAX_RANKS, &n) || (a->tp = (int)n, 0);
        else if (strcmp(o, "--seed") == 0) bad = zs_cli_parse_int(argv[++i], 0, 1L << 62, &n) || (a->sp.seed = (uint64_t)n, 0);
        else if (strcmp(o, "--top-k") == 0) bad = zs_cli_parse_int(argv[++i], 0, 1 << 24, &n) || (a->sp.top_k = (int32_t)n, 0);
        else if (strcmp(o, "--temperature") == 0) bad = parse_float(argv[++i], 0, 100, &a->sp.temperature);
        else if (strcmp(o, "--top-p") == 0) bad = parse_float(argv[++i], 1e-6f, 1, &a->sp.top_p);
        else if (strcmp(o, "--min-p") == 0) bad = parse_float(argv[++i], 0, 1, &a->sp.min_p);
        else if (strcmp(o, "--repetition-penalty") == 0) bad = parse_float(argv[++i], 1e-3f, 100, &a->sp.repetition_penalty);
        else if (strcmp(o, "--kv") == 0) bad = zs_cli_parse_size(argv[++i], &a->kv_bytes) || a->kv_bytes == 0;
        else if (o[0] != '-' && a->dir == NULL) a->dir = o;
        else bad = 1;
        if (bad) {
            fprintf(stderr, "zerostart run: bad or unknown option '%s'%s%s\n", o, v ? " " : "", v ? v : "");
            return -1;
        }
    }
    if (a->dir == NULL || a->prompt == NULL) return -1;
    return 0;
}

/* The prompt's token ids: rendered through the chat template (which adds BOS itself) or
 * encoded with the tokenizer's special tokens. */
static int run_encode(const zs_bundle_t *b, const run_args_t *a, int32_t **ids, size_t *n, zs_err_t *err) {
    if (b->tok == NULL) return zs_err_set(err, ZS_ENOENT, "%s: no tokenizer.json; cannot encode a prompt", a->dir);
    if (!a->chat) return zs_tok_encode(b->tok, a->prompt, strlen(a->prompt), 1, ids, n, err);
    if (b->chat == NULL) return zs_err_set(err, ZS_EUNSUPPORTED, "--chat: %s", b->chat_error);
    json_t *msgs = json_array();
    if (msgs == NULL) return zs_err_set(err, ZS_ENOMEM, "out of memory");
    if (a->system) json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "system", "content", a->system));
    json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "user", "content", a->prompt));
    char *text = NULL;
    size_t len = 0;
    int rc = json_array_size(msgs) == (a->system ? 2u : 1u)
                 ? zs_chat_template_render(b->chat, msgs, 1, NULL, &text, &len, err)
                 : zs_err_set(err, ZS_EINVAL, "prompt is not valid UTF-8");
    json_decref(msgs);
    if (rc == ZS_OK) rc = zs_tok_encode(b->tok, text, len, 0, ids, n, err);
    free(text);
    return rc;
}

static void run_emit(zs_tok_stream_t *st, int32_t tok, zs_err_t *err) {
    const char *text;
    size_t len;
    if (zs_tok_stream_step(st, tok, &text, &len, err) == ZS_OK && len > 0) {
        fwrite(text, 1, len, stdout);
        fflush(stdout);
    }
}

int zs_cmd_run(int argc, char **argv) {
    double t0 = zs_now();
    run_args_t a = {0};
    if (parse_run_args(argc, argv, &a) != 0) return run_usage();
    zs_err_t err = {0};
    zs_bundle_opts_t bo;
    zs_bundle_opts_default(&bo);
    bo.require_tokenizer = 1;
    bo.engine.threads = a.threads;
    if (a.kv_bytes) bo.engine.kv_bytes = (size_t)a.kv_bytes;
    if (a.device != NULL) {
        if (zs_device_parse(a.device, &bo.load.device, &err) != ZS_OK) {
            fprintf(stderr, "zerostart run: %s\n", err.msg);
            return 2;
        }
    } else {
        bo.load.device.kind = zs_cuda_device_count() > 0 ? ZS_DEV_CUDA : ZS_DEV_CPU;
    }
    zs_pool_t *pool = NULL;
    if (a.use_pool && zs_pool_open(&a.pool, &pool, &err) != ZS_OK) {
        fprintf(stderr, "zerostart run: %s\n", err.msg);
        return 1;
    }
    bo.pool = pool;
    bo.overlap_load = 1; /* the prompt's prefill runs while later layers are still arriving */
    bo.tp = a.tp;        /* > 1: tensor parallel (no overlap: every shard is in first) */
    zs_bundle_t *b = NULL;
    if (zs_bundle_open(a.dir, &bo, &b, &err) != ZS_OK) {
        fprintf(stderr, "zerostart run: %s\n", err.msg);
        zs_pool_close(pool);
        return 1;
    }
    int32_t *ids = NULL, seq = -1, tok = 0;
    size_t n = 0;
    zs_sampler_t smp = {0};
    zs_tok_stream_t *st = NULL;
    int32_t vocab = zs_engine_config(b->engine)->vocab;
    float *logits = malloc((size_t)vocab * sizeof *logits);
    int rc = logits ? ZS_OK : zs_err_set(&err, ZS_ENOMEM, "out of memory for logits");
    if (rc == ZS_OK) rc = run_encode(b, &a, &ids, &n, &err);
    if (rc == ZS_OK && n == 0) rc = zs_err_set(&err, ZS_EINVAL, "the prompt encodes to no tokens");
    if (rc == ZS_OK && n > INT32_MAX) rc = zs_err_set(&err, ZS_ERANGE, "prompt too long");
    a.sp.max_tokens = (int32_t)a.max_tokens;
    if (!a.ignore_eos) {
        a.sp.stop_ids = b->stop_ids;
        a.sp.nstop = b->nstop;
    }
    if (rc == ZS_OK) rc = zs_sampler_init(&smp, &a.sp, vocab, &err);
    if (rc == ZS_OK) rc = zs_sampler_add_prompt(&smp, ids, n, &err);
    if (rc == ZS_OK) rc = zs_tok_stream_new(b->tok, 1, &st, &err);
    if (rc == ZS_OK) rc = zs_engine_seq_new(b->engine, &seq, &err);
    double t_ready = zs_now(), t_first = 0, t_end = 0;
    long generated = 0;
    int reason = ZS_SAMPLE_CONTINUE;
    if (rc == ZS_OK) rc = zs_engine_prefill(b->engine, seq, ids, (int32_t)n, logits, &err);
    while (rc == ZS_OK) {
        rc = zs_sampler_sample(&smp, logits, &tok, &err);
        if (rc != ZS_OK) break;
        reason = zs_sampler_accept(&smp, tok, &err);
        if (reason < 0) {
            rc = reason;
            break;
        }
        if (generated++ == 0) t_first = zs_now();
        if (reason != ZS_SAMPLE_STOP_TOKEN) run_emit(st, tok, &err);
        if (reason != ZS_SAMPLE_CONTINUE) break;
        rc = zs_engine_decode(b->engine, 1, &seq, &tok, logits, &err);
    }
    t_end = zs_now();
    if (rc == ZS_OK) rc = zs_bundle_finish_load(b, &err); /* resident long before: records the timeline */
    if (rc == ZS_OK && st != NULL) {
        const char *text;
        size_t len;
        if (zs_tok_stream_flush(st, &text, &len, &err) == ZS_OK && len > 0) fwrite(text, 1, len, stdout);
        printf("\n");
        fflush(stdout);
        const zs_bundle_timeline_t *tl = &b->timeline;
        char bytes[32];
        fprintf(stderr,
                "\ntimeline  config %.3f s | tokenizer+template %.3f s | layer 0 %.3f s | weights %.3f s (%s from %s, "
                "%.2f GB/s) | engine %.3f s | first token %.3f s (from process start)\n",
                tl->opened, tl->tokenizer, tl->first_layer, tl->weights, zs_cli_fmt_bytes(tl->bytes, bytes, sizeof bytes),
                zs_weights_source_name(tl->source), tl->load_gbps, tl->engine, t_first - t0);
        if (a.timeline_json != NULL) {
            char *js = zs_bundle_timeline_json(b, t_first - t0);
            FILE *f = fopen(a.timeline_json, "w");
            if (js == NULL || f == NULL || fputs(js, f) < 0 || fputc('\n', f) == EOF)
                fprintf(stderr, "zerostart run: cannot write %s\n", a.timeline_json);
            if (f) fclose(f);
            free(js);
        }
        fprintf(stderr, "prompt    %zu tokens, prefill + first token %.3f s (%.1f tok/s)\n", n, t_first - t_ready,
                (double)n / (t_first - t_ready));
        fprintf(stderr, "generate  %ld tokens, %.1f tok/s after the first; stopped: %s\n", generated,
                generated > 1 ? (double)(generated - 1) / (t_end - t_first) : 0.0,
                reason == ZS_SAMPLE_STOP_TOKEN ? "end-of-sequence token" : "max tokens");
    }
    if (rc != ZS_OK) fprintf(stderr, "zerostart run: %s\n", err.msg);
    zs_tok_stream_free(st);
    zs_sampler_free(&smp);
    free(ids);
    free(logits);
    zs_bundle_free(b);
    zs_pool_close(pool);
    return rc == ZS_OK ? 0 : 1;
}
