/* What a Halide object compiled for hexagon-32-noos-hvx_128-hvx_v66-no_runtime refers to and
 * the emulator's freestanding harness (tvm_s2d/emulator/runtime.c: syscalls, memset, memcpy,
 * integer division) does not provide. scripts/bench_hexagon_peers.py links it with the Halide
 * objects; the halide_error_* reporters the objects name are generated there (each prints its
 * name and fails the pipeline). None of these run inside the counted kernels but the
 * HVX lock, which Halide's own runtime code (in its objects, counted) calls once a pipeline.
 */
#include <stddef.h>

void s2d_write_all(int fd, const void* buffer, long size);

static long length(const char* s) {
  long n = 0;
  while (s && s[n]) n++;
  return n;
}

void halide_stub_say(const char* message) {
  s2d_write_all(2, message, length(message));
  s2d_write_all(2, "\n", 1);
}

/* Heap for Halide's heap allocations (a bump allocator; the pipelines here allocate on the stack). */
static unsigned char heap[8L << 20] __attribute__((aligned(128)));
static long heap_used;

void* malloc(size_t n) {
  long start = (heap_used + 127) & ~127L;
  if (start + (long)n > (long)sizeof heap) return 0;
  heap_used = start + (long)n;
  return heap + start;
}

void free(void* p) { (void)p; }

void halide_error(void* user_context, const char* message) {
  (void)user_context;
  halide_stub_say(message);
}

int halide_msan_annotate_memory_is_initialized(void* user_context, const void* p, unsigned long long n) {
  (void)user_context, (void)p, (void)n;
  return 0;
}

char* halide_string_to_string(char* dst, char* end, const char* arg) {
  while (dst < end && arg && *arg) *dst++ = *arg++;
  if (dst < end) *dst = 0;
  return dst;
}

/* QuRT's HVX context lock: qemu-hexagon's user mode has HVX enabled, nothing to lock. */
int qurt_hvx_lock(int mode) {
  (void)mode;
  return 0;
}

int qurt_hvx_unlock(void) { return 0; }

/* No VTCM under qemu: a request fails (Halide then keeps to ordinary memory). */
void* HAP_request_VTCM(unsigned size, unsigned single_page_flag) {
  (void)size, (void)single_page_flag;
  return 0;
}

int HAP_release_VTCM(void* p) {
  (void)p;
  return 0;
}
