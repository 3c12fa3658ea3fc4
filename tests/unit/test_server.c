/* Unit tests for the server's pure parts: stop strings and hold-back, the prefix cache
 * (chained hashes, longest match with token verification, first-owner-wins, takeover on
 * drop, LRU holders), the bearer-token check, request parsing defaults and errors, error
 * and chunk JSON, the pre-warming keys of the config file. */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "server/auth.h"
#include "server/openai_request.h"
#include "server/openai_response.h"
#include "server/prefix_cache.h"
#include "server/textstop.h"
#include "zerostart/server.h"
#include "zt.h"

static void test_stop_strings(void) {
    char *stop[] = {"END", "\n\n"};
    size_t len[] = {3, 2};
    const char *t = "hello EN";
    ZT_CHECK(zs_stop_find(t, strlen(t), 0, stop, len, 2) == -1);
    ZT_CHECK(zs_stop_safe_len(t, strlen(t), 0, stop, len, 2) == 6); /* "EN" held back */
    t = "hello END world";
    ZT_CHECK(zs_stop_find(t, strlen(t), 0, stop, len, 2) == 6);
    ZT_CHECK(zs_stop_find(t, strlen(t), 7, stop, len, 2) == -1);
    t = "a\n\nb END";
    ZT_CHECK(zs_stop_find(t, strlen(t), 0, stop, len, 2) == 1); /* the earliest wins */
    t = "abc\n";
    ZT_CHECK(zs_stop_safe_len(t, strlen(t), 0, stop, len, 2) == 3);
    ZT_CHECK(zs_stop_safe_len(t, strlen(t), 0, stop, len, 0) == 4);
    t = "xE";
    ZT_CHECK(zs_stop_safe_len(t, 2, 2, stop, len, 2) == 2); /* never before `from` */
}

static void test_prefix_cache(void) {
    zs_pcache_t c;
    ZT_REQUIRE(zs_pcache_init(&c, 4, 8, 64) == 0);
    int32_t a[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    int32_t b[12] = {1, 2, 3, 4, 5, 6, 7, 9, 9, 10, 11, 12}; /* differs in block 1 */
    int32_t owner = -1;
    zs_kv_ns_t ns, other;
    ZT_REQUIRE(zs_kv_namespace("model", NULL, &ns, NULL) == ZS_OK);
    ZT_REQUIRE(zs_kv_namespace("model", "tenant-b", &other, NULL) == ZS_OK);
    ZT_CHECK(zs_pcache_match(&c, &ns, a, 12, 2, &owner) == 0 && owner == -1);
    int32_t ia = zs_pcache_register(&c, &ns, 7, a, 3, 0);
    ZT_REQUIRE(ia >= 0);
    ZT_CHECK(zs_pcache_match(&c, &ns, a, 12, 2, &owner) == 2 && owner == ia); /* capped */
    ZT_CHECK(zs_pcache_match(&c, &ns, a, 12, 3, &owner) == 3);
    /* another tenant's namespace never matches these blocks */
    ZT_CHECK(zs_pcache_match(&c, &other, a, 12, 3, &owner) == 0 && owner == -1);
    ZT_CHECK(zs_pcache_match(&c, &ns, b, 12, 3, &owner) == 1 && owner == ia);
    ZT_CHECK(zs_pcache_match(&c, &ns, a, 7, 3, &owner) == 1); /* only full blocks of the prompt */
    ZT_CHECK(zs_pcache_lru_holder(&c) == -1);            /* a running request is not evictable */
    int32_t ib = zs_pcache_register(&c, &ns, 9, b, 3, 1);
    ZT_REQUIRE(ib >= 0 && ib != ia);
    ZT_CHECK(zs_pcache_match(&c, &ns, b, 12, 3, &owner) == 3 && owner == ib);
    ZT_CHECK(zs_pcache_lru_holder(&c) == ib);
    ZT_CHECK(zs_pcache_peek(&c, &ns, b, 12, 3) == 3 && zs_pcache_peek(&c, &other, b, 12, 3) == 0);
    zs_pcache_rebind(&c, ia, 11, 1);
    ZT_CHECK(zs_pcache_owner_of(&c, 11) == ia && zs_pcache_owner_of(&c, 7) == -1);
    ZT_CHECK(zs_pcache_nholders(&c) == 2);
    /* dropping a's owner: the shared first block is taken over by b's owner */
    ZT_CHECK(zs_pcache_drop(&c, ia) == 11);
    ZT_CHECK(zs_pcache_match(&c, &ns, a, 12, 3, &owner) == 1 && owner == ib);
    ZT_CHECK(zs_pcache_drop(&c, ib) == 9);
    ZT_CHECK(zs_pcache_match(&c, &ns, b, 12, 3, &owner) == 0 && c.nentries == 0);
    /* hash chain: equal blocks at different depths hash differently */
    int32_t z[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    uint64_t h[2];
    zs_pcache_hashes(&ns, z, 2, 4, h);
    ZT_CHECK(h[0] != h[1]);
    uint64_t h2[2];
    zs_pcache_hashes(&other, z, 2, 4, h2); /* and differently per namespace */
    ZT_CHECK(h2[0] != h[0] && h2[1] != h[1]);
    /* owner slots run out: register refuses instead of overwriting */
    for (int i = 0; i < 8; i++) ZT_CHECK(zs_pcache_register(&c, &ns, 100 + i, z, 2, 1) >= 0);
    ZT_CHECK(zs_pcache_register(&c, &ns, 200, z, 2, 1) == -1);
    zs_pcache_destroy(&c);
}

static void test_auth(void) {
    ZT_CHECK(zs_auth_check(NULL, NULL) == 1);
    ZT_CHECK(zs_auth_check("k1", NULL) == 0);
    ZT_CHECK(zs_auth_check("k1", "Bearer k1") == 1);
    ZT_CHECK(zs_auth_check("k1", "bearer  k1 ") == 1);
    ZT_CHECK(zs_auth_check("k1", "Bearer k") == 0);
    ZT_CHECK(zs_auth_check("k1", "Bearer k12") == 0);
    ZT_CHECK(zs_auth_check("k1", "k1") == 0);
    ZT_CHECK(zs_auth_check("k1", "Bearer ") == 0);
}

static void test_request_parse(void) {
    zs_oai_req_t r;
    zs_oai_error_t e;
    const char *ok = "{\"model\":\"m\",\"prompt\":\"hi\",\"stop\":[\"\",\"x\"],\"extra\":1}";
    ZT_REQUIRE(zs_oai_request_parse(ZS_OAI_COMPLETIONS, ok, strlen(ok), &r, &e) == 0);
    ZT_CHECK(strcmp(r.model, "m") == 0 && r.prompt_len == 2 && r.max_tokens == -1);
    ZT_CHECK(r.temperature == 1.0 && r.top_p == 1.0 && r.repetition_penalty == 1.0);
    ZT_CHECK(r.nstop == 1 && strcmp(r.stop[0], "x") == 0); /* empty stop strings dropped */
    zs_oai_request_free(&r);
    const char *chat = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
                       "[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"}]}]}";
    ZT_REQUIRE(zs_oai_request_parse(ZS_OAI_CHAT, chat, strlen(chat), &r, &e) == 0);
    json_t *c = json_object_get(json_array_get(r.messages, 0), "content");
    ZT_CHECK(json_is_string(c) && strcmp(json_string_value(c), "a\nb") == 0);
    zs_oai_request_free(&r);
    const char *bad = "{\"model\":\"m\",\"prompt\":\"hi\",\"top_p\":0}";
    ZT_CHECK(zs_oai_request_parse(ZS_OAI_COMPLETIONS, bad, strlen(bad), &r, &e) != 0);
    ZT_CHECK(e.status == 400 && strcmp(e.param, "top_p") == 0);
    size_t len = 0;
    char *body = zs_oai_error_body(&e, &len);
    ZT_REQUIRE(body != NULL);
    ZT_CHECK_STR_CONTAINS(body, "\"param\":\"top_p\"");
    ZT_CHECK_STR_CONTAINS(body, "\"type\":\"invalid_request_error\"");
    free(body);
    /* messages quoting invalid UTF-8 still render */
    zs_oai_error_set(&e, 404, NULL, NULL, NULL, "model '%s'", "\xff\xfe");
    body = zs_oai_error_body(&e, NULL);
    ZT_CHECK(body != NULL);
    free(body);
}

static void test_response_json(void) {
    zs_oai_meta_t m = {.kind = ZS_OAI_CHAT, .id = "chatcmpl-1", .created = 5, .model = "t"};
    char *s = zs_oai_chunk_json(&m, 0, "a\xff" "b", 3, NULL, 0); /* invalid UTF-8 replaced */
    ZT_REQUIRE(s != NULL);
    ZT_CHECK_STR_CONTAINS(s, "\"content\":\"a\xEF\xBF\xBD" "b\"");
    ZT_CHECK(strstr(s, "usage") == NULL);
    free(s);
    zs_oai_usage_t u = {.prompt_tokens = 3, .completion_tokens = 2};
    s = zs_oai_completion_json(&m, "hi", 2, "length", &u);
    ZT_REQUIRE(s != NULL);
    ZT_CHECK_STR_CONTAINS(s, "\"total_tokens\":5");
    ZT_CHECK_STR_CONTAINS(s, "\"finish_reason\":\"length\"");
    free(s);
}

/* The pre-warming and warm-up keys of the JSON config (and their switch spelling). */
static void test_config_prewarm_keys(void) {
    zs_server_config_t c;
    zs_server_config_init(&c);
    ZT_CHECK(c.prewarm == 0 && c.prewarm_threshold == 0.5 && c.warmup == -1);
    zs_err_t err = {0};
    const char *ok = "{\"prewarm\": true, \"prewarm_threshold\": 0.8, \"warmup\": \"off\"}";
    ZT_CHECK_MSG(zs_server_config_load_json(&c, ok, strlen(ok), "cfg", &err) == 0, "%s", err.msg);
    ZT_CHECK(c.prewarm == 1 && c.prewarm_threshold == 0.8 && c.warmup == 0);
    const char *sw = "{\"prewarm\": \"off\", \"warmup\": \"auto\"}";
    ZT_CHECK(zs_server_config_load_json(&c, sw, strlen(sw), "cfg", &err) == 0);
    ZT_CHECK(c.prewarm == 0 && c.warmup == -1);
    const char *bad[] = {"{\"prewarm\": \"auto\"}", "{\"prewarm\": 2}", "{\"warmup\": \"maybe\"}",
                         "{\"prewarm_threshold\": 0}", "{\"prewarm_threshold\": 1.5}",
                         "{\"prewarm_threshold\": \"0.5\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        zs_err_clear(&err);
        ZT_CHECK_MSG(zs_server_config_load_json(&c, bad[i], strlen(bad[i]), "cfg", &err) != 0, "%s", bad[i]);
        ZT_CHECK_STR_CONTAINS(err.msg, bad[i][2] == 'w' ? "warmup" : "prewarm");
    }
    int v = 7;
    ZT_CHECK(zs_server_parse_switch("on", 0, &v) == 0 && v == 1);
    ZT_CHECK(zs_server_parse_switch("auto", 0, &v) != 0);
    ZT_CHECK(zs_server_parse_switch("auto", 1, &v) == 0 && v == -1);
    zs_server_config_free(&c);
}

int main(void) {
    ZT_RUN(test_stop_strings);
    ZT_RUN(test_prefix_cache);
    ZT_RUN(test_auth);
    ZT_RUN(test_request_parse);
    ZT_RUN(test_response_json);
    ZT_RUN(test_config_prewarm_keys);
    return ZT_DONE();
}
