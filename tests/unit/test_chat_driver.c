/* Chat-template driver for the Python comparison tests (tests/py/test_chat_template.py).
 *   test_chat_driver                         self-test: renders a small template, exits 0/1
 *   test_chat_driver render CONFIG MESSAGES [add_generation_prompt 0|1] [EXTRA_VARS]
 * CONFIG is a tokenizer_config.json path, MESSAGES and EXTRA_VARS are JSON files. The
 * rendering goes to stdout as raw bytes; an error goes to stderr as "error: <status>: <msg>"
 * with exit code 2. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zerostart/chat_template.h"
#include "zt.h"

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) return NULL;
    size_t cap = 4096, n = 0;
    char *p = malloc(cap);
    while (p) {
        size_t k = fread(p + n, 1, cap - n - 1, f);
        n += k;
        if (k == 0) break;
        if (n + 1 == cap) {
            char *np = realloc(p, cap * 2);
            if (np == NULL) { free(p); p = NULL; break; }
            p = np;
            cap *= 2;
        }
    }
    fclose(f);
    if (p) p[n] = '\0';
    return p;
}

static int render_cmd(int argc, char **argv) {
    const char *cfg = argv[2], *msgs_path = argv[3];
    int add_gen = argc > 4 ? atoi(argv[4]) : 0;
    const char *extra_path = argc > 5 ? argv[5] : NULL;
    zs_err_t err = {0};
    zs_chat_template_t *t = NULL;
    char *msgs = slurp(msgs_path), *extra = extra_path ? slurp(extra_path) : NULL;
    if (msgs == NULL || (extra_path && extra == NULL)) {
        fprintf(stderr, "error: EIO: cannot read %s\n", msgs == NULL ? msgs_path : extra_path);
        free(msgs);
        free(extra);
        return 2;
    }
    int rc = zs_chat_template_load_file(cfg, NULL, &t, &err);
    char *out = NULL;
    size_t len = 0;
    if (rc == 0) rc = zs_chat_template_render_json(t, msgs, add_gen, extra, &out, &len, &err);
    zs_chat_template_free(t);
    free(msgs);
    free(extra);
    if (rc != 0) {
        fprintf(stderr, "error: %s: %s\n", zs_status_name(err.code), err.msg);
        return 2;
    }
    fwrite(out, 1, len, stdout);
    free(out);
    return 0;
}

static void selftest(void) {
    static const char cfg[] =
        "{\"bos_token\": {\"content\": \"<s>\"}, \"eos_token\": \"</s>\", \"chat_template\": "
        "\"{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content | trim }}\\n{% endfor %}"
        "{% if add_generation_prompt %}[assistant]{% endif %}\"}";
    zs_err_t err = {0};
    zs_chat_template_t *t = NULL;
    ZT_REQUIRE(zs_chat_template_load_json(cfg, strlen(cfg), NULL, &t, &err) == 0);
    char *out = NULL;
    int rc = zs_chat_template_render_json(t, "[{\"role\":\"user\",\"content\":\"  hi \"}]", 1, NULL, &out,
                                          NULL, &err);
    ZT_CHECK_MSG(rc == 0, "%s", err.msg);
    if (out) ZT_CHECK_MSG(strcmp(out, "<s>[user] hi\n[assistant]") == 0, "got '%s'", out);
    free(out);
    zs_chat_template_free(t);
}

int main(int argc, char **argv) {
    if (argc >= 4 && strcmp(argv[1], "render") == 0) return render_cmd(argc, argv);
    if (argc != 1) {
        fprintf(stderr, "usage: %s [render TOKENIZER_CONFIG MESSAGES_JSON [0|1] [EXTRA_VARS_JSON]]\n", argv[0]);
        return 2;
    }
    ZT_RUN(selftest);
    return ZT_DONE();
}
