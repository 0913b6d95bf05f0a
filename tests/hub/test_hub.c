/*
 * test_hub.c — the Hub module's local decisions without a network: which names are
 * repo ids, folders winning over repo ids, the offline cache lookup in huggingface_hub's
 * layout (refs/main → snapshots/COMMIT), and one-line errors for names that are neither.
 * The cache layout's rules (relative blob links, refs without a newline, nested refs,
 * etag normalisation) are those of huggingface_hub's file_download.py: the expected
 * strings below are what its os.path.relpath / Path.write_text / _normalize_etag give.
 * The transfers themselves are tested against a loopback server in the tests/hub shell scripts.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/file.h"
#include "harness.h"
#include "hub/cache.h"
#include "hub/http.h"
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
    CHECK_OK(lc_hub_download("acme/tiny", &o, &dir, NULL)); // offline: the cached snapshot
    CHECK_EQ_STR(dir, snap);
    free(dir);
    dir = NULL;
    CHECK_FAILS(lc_hub_download("acme/other", &o, &dir, NULL), "HF_HUB_OFFLINE");
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

static void etags_and_links(void) {
    char e1[] = "W/\"a98c46c71c932a57a1ec95007803ea5509cc6316\"", e2[] = "\"89df2568\"", e3[] = "plain";
    lc_hub_normalize_etag(e1);
    lc_hub_normalize_etag(e2);
    lc_hub_normalize_etag(e3);
    CHECK_EQ_STR(e1, "a98c46c71c932a57a1ec95007803ea5509cc6316");
    CHECK_EQ_STR(e2, "89df2568");
    CHECK_EQ_STR(e3, "plain");
    char *t = lc_hub_blob_target("config.json", "abc");
    CHECK_EQ_STR(t, "../../blobs/abc"); // os.path.relpath(blobs/abc, snapshots/C)
    free(t);
    t = lc_hub_blob_target("sub/deeper/x.txt", "abc");
    CHECK_EQ_STR(t, "../../../../blobs/abc"); // from snapshots/C/sub/deeper
    free(t);
    CHECK(lc_hub_is_commit("2439f60ef33a0d46d85da5001d52aeda5b00ce9f"));
    CHECK(!lc_hub_is_commit("2439f60ef33a0d46d85da5001d52aeda5b00ce9"));
    CHECK(!lc_hub_is_commit("2439F60EF33A0D46D85DA5001D52AEDA5B00CE9F"));
    CHECK(!lc_hub_is_commit("main"));
    CHECK(lc_hub_safe_path("refs/pr/1"));
    CHECK(!lc_hub_safe_path("refs/../x"));
    CHECK(!lc_hub_safe_path("/abs"));
    CHECK(!lc_hub_safe_path("a//b"));
    lc_buf b = {0};
    lc_hub_url_escape(&b, "refs/pr/1", true);
    lc_hub_url_escape(&b, "|a b/c.json", false);
    CHECK_EQ_STR(b.data, "refs%2Fpr%2F1%7Ca%20b/c.json");
    lc_buf_free(&b);
}

static void refs_and_snapshots(void) {
    char tmpl[] = "/tmp/lorac-hubc-XXXXXX";
    CHECK(mkdtemp(tmpl) != NULL);
    setenv("HF_HOME", tmpl, 1);
    unsetenv("HF_HUB_CACHE");
    const char *c1 = "1111111111111111111111111111111111111111";
    char *folder = lc_hub_repo_folder("acme/x", true);
    char *want = lc_path_join(tmpl, "hub/datasets--acme--x");
    CHECK_EQ_STR(folder, want);
    CHECK_OK(lc_hub_write_ref(folder, "main", c1));
    CHECK_OK(lc_hub_write_ref(folder, "refs/pr/1", c1));
    CHECK_OK(lc_hub_write_ref(folder, c1, c1)); // a commit gets no ref file
    char *refmain = lc_path_join(folder, "refs/main"), *refpr = lc_path_join(folder, "refs/refs/pr/1");
    char *refc1 = lc_path_join(folder, "refs"), *data = NULL;
    size_t len = 0;
    CHECK_OK(lc_read_file(refmain, 100, &data, &len));
    CHECK(len == 40 && !strcmp(data, c1)); // no newline: huggingface_hub reads it without strip
    free(data);
    CHECK(lc_is_file(refpr));
    char *c1path = lc_path_join(refc1, c1);
    CHECK(!lc_is_file(c1path));
    char *dir = NULL;
    CHECK_FAILS(lc_hub_cached_snapshot("acme/x", true, "main", &dir), "snapshots/1111111111111111111111111111111111111111 is missing");
    char *snap = lc_path_join(folder, "snapshots/1111111111111111111111111111111111111111");
    char *ptr = lc_path_join(snap, "data/train.jsonl"), *blobs = lc_path_join(folder, "blobs");
    char *blob = lc_path_join(blobs, "abc");
    CHECK_OK(lc_mkdirs(blobs));
    CHECK_OK(lc_write_file_atomic(blob, "{}\n", 3));
    CHECK_OK(lc_hub_link(ptr, "../../../blobs/abc"));
    CHECK_OK(lc_hub_link(ptr, "../../../blobs/abc")); // replacing works
    char buf[256];
    ssize_t n = readlink(ptr, buf, sizeof buf - 1);
    CHECK(n == 18);
    buf[n > 0 ? n : 0] = 0;
    CHECK_EQ_STR(buf, "../../../blobs/abc");
    CHECK(lc_is_file(ptr)); // resolves to the blob
    for (int k = 0; k < 3; k++) {
        const char *rev = k == 0 ? "main" : k == 1 ? "refs/pr/1" : c1;
        CHECK_OK(lc_hub_cached_snapshot("acme/x", true, rev, &dir));
        CHECK_EQ_STR(dir, snap);
        free(dir);
        dir = NULL;
    }
    CHECK_FAILS(lc_hub_cached_snapshot("acme/x", true, "v9", &dir), "refs/v9");
    CHECK_FAILS(lc_hub_cached_snapshot("acme/y", true, "main", &dir), "not in the Hugging Face cache");
    setenv("LORAC_HUB_FREE_BYTES", "1234", 1);
    CHECK(lc_hub_free_bytes(tmpl) == 1234);
    unsetenv("LORAC_HUB_FREE_BYTES");
    CHECK(lc_hub_free_bytes(tmpl) > 0);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpl);
    CHECK(system(cmd) == 0);
    free(folder), free(want), free(refmain), free(refpr), free(refc1), free(c1path), free(snap), free(ptr);
    free(blobs), free(blob);
}

int main(void) {
    RUN(etags_and_links);
    RUN(refs_and_snapshots);
    RUN(sha256_vectors);
    RUN(repo_ids);
    RUN(folder_wins_and_offline_cache);
    return t_summary();
}
