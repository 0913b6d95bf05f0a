/*
 * select.c — choosing a backend by name ("cpu", "cuda", "cuda:N", "auto") and listing
 * the backends compiled in. The CUDA backend exists only in builds where the Makefile
 * found nvcc (it then defines LC_HAVE_CUDA for the C code); elsewhere asking for it is
 * a clear error. Owns nothing.
 */
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/error.h"

const char *lc_backend_list(void) {
#ifdef LC_HAVE_CUDA
    return "cpu, cuda";
#else
    return "cpu";
#endif
}

lc_backend *lc_backend_new(const char *device) {
    if (!device || !*device || !strcmp(device, "cpu")) return lc_backend_cpu_new(0);
    bool any = !strcmp(device, "auto");
    int gpu = 0;
    if (!any) {
        if (strncmp(device, "cuda", 4) != 0 || (device[4] && device[4] != ':')) {
            lc_fail("device '%s': unknown (use cpu, cuda, cuda:N or auto)", device);
            return NULL;
        }
        if (device[4] == ':') {
            char *end;
            long n = strtol(device + 5, &end, 10);
            if (end == device + 5 || *end || n < 0 || n > 255) {
                lc_fail("device '%s': the GPU number must be 0..255 (e.g. cuda:1)", device);
                return NULL;
            }
            gpu = (int)n;
        }
    }
#ifdef LC_HAVE_CUDA
    lc_backend *be = lc_backend_cuda_new(gpu);
    if (be || !any) return be;
    lc_err_clear(); // auto: no GPU answered, so the CPU it is
#else
    (void)gpu;
    if (!any) {
        lc_fail("device '%s': this lorac was built without CUDA (install the CUDA toolkit so "
                "that nvcc is found, then rebuild with make), use --device cpu",
                device);
        return NULL;
    }
#endif
    return lc_backend_cpu_new(0);
}
