/*
 * test_hub.c — the Hub module's local decisions without a network: which names are
 * repo ids, folders winning over repo ids, the offline cache lookup in huggingface_hub's
 * layout (refs/main → snapshots/COMMIT), and one-line errors for names that are neither.
 * The transfers themselves are tested against a loopback server in test_download.sh.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/file.h"
#include "harness.h"
#include "hub/hub.h"
#include "hub/sha256.h"

static void repo_ids(void) {
    CHECK(lc_hub_is_repo_id("mistralai/Mistral-7B-Instruct-v0.3"));
    CHECK(lc_hub_is_repo_id("Qwen/Qwen2.5-0.5B-Instruct"));
    CHECK(!lc_hub_is_repo_id("gpt2"));         // a plain name is taken for a path
    CHECK(!lc_hub_is_repo_id("a/b/c"));
    CHECK(!lc_hub_is_repo_id("./a/b"));
    CHECK(!lc_hub_is_repo_id("/abs/path"));
    CHECK(!lc_hub_is_repo_id("a/"));
    CHECK(!lc_hub_is_repo_id("a/.."));
    CHECK(!lc_hub_is_repo_id("a b/c"));
    CHECK(!lc_hub_is_repo_id("tests/hub")); // an existing folder is a folder
    CHECK(!lc_hub_is_repo_id(""));
}

static void folder_wins_and_offline_cache(void) {
    char *dir = NULL;
    CHECK_OK(lc_hub_resolve_model("tests/hub", &dir));
    CHECK_EQ_STR(dir, "tests/hub");
    free(dir);

    char tmpl[] = "/tmp/lorac-hub-XXXXXX";
    CHECK(mkdtemp(tmpl) != NULL);
    setenv("HF_HOME", tmpl, 1);
    unsetenv("HF_HUB_CACHE");
    setenv("HF_HUB_OFFLINE", "1", 1);
    CHECK_FAILS(lc_hub_resolve_model("acme/none", &dir), "HF_HUB_OFFLINE");
    CHECK(dir == NULL);
    char *snap = lc_path_join(tmpl, "hub/models--acme--tiny/snapshots/0123abcd");
    char *ref = lc_path_join(tmpl, "hub/models--acme--tiny/refs");
    CHECK_OK(lc_mkdirs(snap));
    CHECK_OK(lc_mkdirs(ref));
    char *reff = lc_path_join(ref, "main"), *cfg = lc_path_join(snap, "config.json");
    CHECK_OK(lc_write_file_atomic(reff, "0123abcd\n", 9));
    CHECK_FAILS(lc_hub_resolve_model("acme/tiny", &dir), "HF_HUB_OFFLINE"); // no config.json yet
    CHECK_OK(lc_write_file_atomic(cfg, "{}", 2));
    CHECK_OK(lc_hub_resolve_model("acme/tiny", &dir));
    CHECK_EQ_STR(dir, snap);
    free(dir);
    dir = NULL;
    CHECK_FAILS(lc_hub_resolve_model("no-such-folder", &dir), "no such model folder");
    lc_hub_options o = {0};
    CHECK_FAILS(lc_hub_download("acme/tiny", &o, &dir, NULL), "HF_HUB_OFFLINE");
    unsetenv("HF_HUB_OFFLINE");
    CHECK_FAILS(lc_hub_download("../etc", &o, &dir, NULL), "not a Hugging Face repo id");
    o.revision = "a/../../b";
    CHECK_FAILS(lc_hub_download("acme/tiny", &o, &dir, NULL), "--revision");
    unlink(cfg), unlink(reff), rmdir(snap), rmdir(ref);
    char *snaps = lc_path_join(tmpl, "hub/models--acme--tiny/snapshots");
    char *repo = lc_path_join(tmpl, "hub/models--acme--tiny"), *hub = lc_path_join(tmpl, "hub");
    rmdir(snaps), rmdir(repo), rmdir(hub), rmdir(tmpl);
    free(snaps), free(repo), free(hub), free(snap), free(ref), free(reff), free(cfg);
}

/* FIPS 180-4 example digests, and one computed by Python's hashlib for a million 'a's fed
 * in uneven pieces (crossing the block boundary every way). */
static void sha256_vectors(void) {
    struct {
        const char *msg, *hex;
    } V[] = {{"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
             {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
             {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
              "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"}};
    char hex[65];
    for (size_t i = 0; i < sizeof V / sizeof V[0]; i++) {
        lc_sha256 s;
        lc_sha256_init(&s);
        lc_sha256_update(&s, V[i].msg, strlen(V[i].msg));
        lc_sha256_final_hex(&s, hex);
        CHECK_EQ_STR(hex, V[i].hex);
    }
    static char a[1000000];
    memset(a, 'a', sizeof a);
    lc_sha256 s;
    lc_sha256_init(&s);
    for (size_t off = 0, k = 1; off < sizeof a; k = k % 97 + 1) {
        size_t n = off + k < sizeof a ? k : sizeof a - off;
        lc_sha256_update(&s, a + off, n);
        off += n;
    }
    lc_sha256_final_hex(&s, hex);
    CHECK_EQ_STR(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

int main(void) {
    RUN(sha256_vectors);
    RUN(repo_ids);
    RUN(folder_wins_and_offline_cache);
    return t_summary();
}
