/* `zerostart synth` (write a synthetic checkpoint) and `zerostart demo` (the first-run job:
 * write the built-in synthetic model, load it with a timing breakdown and a byte-for-byte
 * check, then chat with it through `zerostart run`). */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "zerostart/load.h"
#include "zerostart/synth.h"

int zs_cmd_synth(int argc, char **argv) {
    const char *dir = NULL, *shape_name = "tiny";
    long seed = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--shape") == 0 && i + 1 < argc) shape_name = argv[++i];
        else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
            if (zs_cli_parse_int(argv[++i], 0, 1L << 40, &seed) != 0) {
                fprintf(stderr, "zerostart synth: bad --seed '%s'\n", argv[i]);
                return 2;
            }
        } else if (argv[i][0] != '-' && dir == NULL) dir = argv[i];
        else {
            fprintf(stderr, "zerostart synth: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (dir == NULL) {
        fprintf(stderr, "usage: zerostart synth DIR [--shape tiny|small|llama3-8b|llama3-70b|llama3-70b-40l] [--seed N]\n");
        return 2;
    }
    const zs_synth_shape_t *shape = zs_synth_shape(shape_name);
    if (shape == NULL) {
        fprintf(stderr, "zerostart synth: unknown shape '%s' (tiny, small, llama3-8b, llama3-70b, llama3-70b-40l)\n", shape_name);
        return 2;
    }
    zs_err_t err = {0};
    char b[32];
    printf("writing %s-shaped checkpoint (%s, random bf16 weights) to %s\n", shape->name,
           zs_cli_fmt_bytes(zs_synth_bytes(shape), b, sizeof b), dir);
    if (zs_synth_write(dir, shape, (uint64_t)seed, &err) != ZS_OK) {
        fprintf(stderr, "zerostart synth: %s\n", err.msg);
        return 1;
    }
    return 0;
}

int zs_cmd_demo(int argc, char **argv) {
    const char *dir = "build/demo-model", *device = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) dir = argv[++i];
        else if (strcmp(argv[i], "--device") == 0 && i + 1 < argc) device = argv[++i];
        else {
            fprintf(stderr, "zerostart demo: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    const zs_synth_shape_t *shape = zs_synth_shape("small");
    zs_err_t err = {0};
    char b[32];
    printf("zerostart demo: a synthetic Llama-architecture model (%s, RANDOM weights, %d layers) in "
           "Hugging Face layout at %s\n", zs_cli_fmt_bytes(zs_synth_bytes(shape), b, sizeof b),
           shape->layers, dir);
    if (zs_synth_write(dir, shape, 1, &err) != ZS_OK) {
        fprintf(stderr, "zerostart demo: %s\n", err.msg);
        return 1;
    }
    if (device == NULL) device = zs_cuda_device_count() > 0 ? "cuda:0" : "cpu";
    printf("loading it onto %s%s:\n\n", device,
           strcmp(device, "cpu") == 0 ? " (no usable CUDA device here)" : "");
    char *load_argv[] = {"load", (char *)dir, "--device", (char *)device, "--verify", NULL};
    int rc = zs_cmd_load(5, load_argv);
    if (rc != 0) return rc;
    printf("\nchatting with it (greedy, 32 tokens; the weights are random, so the reply is noise):\n\n");
    fflush(stdout);
    char *run_argv[] = {"run", (char *)dir, "--chat", "--device", (char *)device, "--system",
                        "You are a helpful assistant.", "-p", "Why does start-up speed matter?",
                        "--max-tokens", "32", "--ignore-eos", NULL};
    return zs_cmd_run(12, run_argv);
}
