/* `zerostart` command entry point: dispatches to the subcommands. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: zerostart <command> [options]\n"
            "\n"
            "commands:\n"
            "  load PATH [--device cuda:N|cpu] [--threads N] [--chunk SIZE] [--staging SIZE]\n"
            "            [--slots N] [--direct auto|on|off] [--readahead] [--pool] [--pool-dir DIR]\n"
            "            [--pool-size SIZE] [--tp N] [--verify] [--json]\n"
            "        load a Hugging Face model directory (or .safetensors file) into GPU or host\n"
            "        memory and print a timing breakdown; --tp N slices it over N GPUs (or N host\n"
            "        buffers with --device cpu), every byte read once, and prints per-rank bytes\n"
            "  run MODEL_DIR -p PROMPT [--chat] [--device cuda:N|cpu] [--max-tokens N] [--tp N] ...\n"
            "        generate text, streamed, and print the start-up timeline and speeds; --tp N runs\n"
            "        the model tensor parallel over N GPUs (or N simulated ranks with --device cpu)\n"
            "  synth DIR [--shape tiny|small|llama3-8b|llama3-70b|llama3-70b-40l] [--seed N]\n"
            "        write a synthetic Llama-architecture checkpoint with random weights\n"
            "  demo [--dir DIR] [--device cuda:N|cpu]\n"
            "        write the built-in synthetic model and load it\n"
            "  pool ls|warm|evict|verify [MODEL_DIR] [--pool-dir DIR] [--pool-size SIZE]\n"
            "        the hot model pool in host memory (default /dev/shm/zerostart-pool)\n"
            "  probe [--disk] [--cache] [--threads N,...] [--chunk SIZE,...] [--h2d SIZE [--gpus N]] FILE...\n"
            "        measure storage (O_DIRECT), page-cache and pinned host->GPU bandwidth\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "load") == 0) return zs_cmd_load(argc - 1, argv + 1);
    if (strcmp(argv[1], "synth") == 0) return zs_cmd_synth(argc - 1, argv + 1);
    if (strcmp(argv[1], "demo") == 0) return zs_cmd_demo(argc - 1, argv + 1);
    if (strcmp(argv[1], "probe") == 0) return zs_cmd_probe(argc - 1, argv + 1);
    if (strcmp(argv[1], "serve") == 0) return zs_cmd_serve(argc - 1, argv + 1);
    if (strcmp(argv[1], "run") == 0) return zs_cmd_run(argc - 1, argv + 1);
    if (strcmp(argv[1], "pool") == 0) return zs_cmd_pool(argc - 1, argv + 1);
    fprintf(stderr, "zerostart: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
