/* Freestanding runtime for TVM-generated Hexagon kernels under qemu-hexagon (Linux user mode).
 *
 * No libc: Linux syscalls go through trap0(#1) with the number in r6. The generated main (see
 * emulator.py) reads the inputs from stdin, calls the kernel's packed entry point and writes
 * the outputs to stdout. This file provides what the TVM object refers to: memset, memcpy,
 * the error hook, and the backend workspace function pointers (a bump allocator); libm.c the
 * float functions (expf, erff, sqrtf and compiler-rt's float helpers).
 */
#include <stddef.h>
#include <stdint.h>

#include "tvm/ffi/c_api.h"

enum { SYS_READ = 63, SYS_WRITE = 64, SYS_EXIT = 93 };

static long sys3(long number, long a, long b, long c) {
  register long r0 __asm__("r0") = a;
  register long r1 __asm__("r1") = b;
  register long r2 __asm__("r2") = c;
  register long r6 __asm__("r6") = number;
  __asm__ volatile("trap0(#1)" : "+r"(r0) : "r"(r1), "r"(r2), "r"(r6) : "memory");
  return r0;
}

void s2d_exit(int code) {
  sys3(SYS_EXIT, code, 0, 0);
  for (;;) {
  }
}

void s2d_read_all(void* buffer, long size) {
  char* p = (char*)buffer;
  while (size > 0) {
    long got = sys3(SYS_READ, 0, (long)p, size);
    if (got <= 0) s2d_exit(101);
    p += got;
    size -= got;
  }
}

void s2d_write_all(int fd, const void* buffer, long size) {
  const char* p = (const char*)buffer;
  while (size > 0) {
    long done = sys3(SYS_WRITE, fd, (long)p, size);
    if (done <= 0) s2d_exit(102);
    p += done;
    size -= done;
  }
}

static long length(const char* s) {
  long n = 0;
  while (s && s[n]) n++;
  return n;
}

void* memset(void* dst, int value, size_t n) {
  unsigned char* d = (unsigned char*)dst;
  while (n--) *d++ = (unsigned char)value;
  return dst;
}

void* memcpy(void* dst, const void* src, size_t n) {
  unsigned char* d = (unsigned char*)dst;
  const unsigned char* s = (const unsigned char*)src;
  while (n--) *d++ = *s++;
  return dst;
}

/* A compiler-rt helper LLVM's Hexagon backend calls for aligned copies. */
void* __hexagon_memcpy_likely_aligned_min32bytes_mult8bytes(void* dst, const void* src, size_t n) {
  return memcpy(dst, src, n);
}

void* memmove(void* dst, const void* src, size_t n) {
  unsigned char* d = (unsigned char*)dst;
  const unsigned char* s = (const unsigned char*)src;
  if (d < s) return memcpy(dst, src, n);
  while (n--) d[n] = s[n];
  return dst;
}

void TVMFFIErrorSetRaisedFromCStrParts(const char* kind, const char** parts, int32_t num_parts) {
  s2d_write_all(2, kind, length(kind));
  s2d_write_all(2, ": ", 2);
  for (int32_t i = 0; i < num_parts; ++i) s2d_write_all(2, parts[i], length(parts[i]));
  s2d_write_all(2, "\n", 1);
}

/* Workspace: a bump allocator over a static arena, 128-byte aligned like HVX vectors. */
#ifndef S2D_WORKSPACE_BYTES
#define S2D_WORKSPACE_BYTES (64L << 20)
#endif
static unsigned char arena[S2D_WORKSPACE_BYTES] __attribute__((aligned(128)));
static long arena_used;

static void* alloc_workspace(int device_type, int device_id, uint64_t nbytes, int dtype_code, int dtype_bits) {
  (void)device_type, (void)device_id, (void)dtype_code, (void)dtype_bits;
  long start = (arena_used + 127) & ~127L;
  if (start + (long)nbytes > S2D_WORKSPACE_BYTES) return 0;
  arena_used = start + (long)nbytes;
  return arena + start;
}

static int free_workspace(int device_type, int device_id, void* ptr) {
  (void)device_type, (void)device_id;
  if ((unsigned char*)ptr >= arena && (unsigned char*)ptr < arena + arena_used) arena_used = (unsigned char*)ptr - arena;
  return 0;
}

void* (*__TVMBackendAllocWorkspace)(int, int, uint64_t, int, int) = alloc_workspace;
int (*__TVMBackendFreeWorkspace)(int, int, void*) = free_workspace;

/* Integer division helpers the Hexagon backend calls (HVX has no divide; compiler-rt provides
 * these in a full toolchain). Shift-and-subtract, so they do not call themselves. */
static unsigned long long udivmod(unsigned long long n, unsigned long long d, unsigned long long* rem) {
  unsigned long long q = 0, r = 0;
  for (int i = 63; i >= 0; i--) {
    r = (r << 1) | ((n >> i) & 1);
    if (r >= d) {
      r -= d;
      q |= 1ULL << i;
    }
  }
  *rem = r;
  return q;
}

unsigned __hexagon_udivsi3(unsigned n, unsigned d) {
  unsigned long long r;
  return (unsigned)udivmod(n, d, &r);
}

unsigned __hexagon_umodsi3(unsigned n, unsigned d) {
  unsigned long long r;
  udivmod(n, d, &r);
  return (unsigned)r;
}

int __hexagon_divsi3(int n, int d) {
  unsigned long long r;
  unsigned q = (unsigned)udivmod(n < 0 ? -(long long)n : n, d < 0 ? -(long long)d : d, &r);
  return (n < 0) != (d < 0) ? -(int)q : (int)q;
}

int __hexagon_modsi3(int n, int d) {
  unsigned long long r;
  udivmod(n < 0 ? -(long long)n : n, d < 0 ? -(long long)d : d, &r);
  return n < 0 ? -(int)r : (int)r;
}

unsigned long long __hexagon_udivdi3(unsigned long long n, unsigned long long d) {
  unsigned long long r;
  return udivmod(n, d, &r);
}

unsigned long long __hexagon_umoddi3(unsigned long long n, unsigned long long d) {
  unsigned long long r;
  udivmod(n, d, &r);
  return r;
}

long long __hexagon_divdi3(long long n, long long d) {
  unsigned long long r, q = udivmod(n < 0 ? -(unsigned long long)n : n, d < 0 ? -(unsigned long long)d : d, &r);
  return (n < 0) != (d < 0) ? -(long long)q : (long long)q;
}

long long __hexagon_moddi3(long long n, long long d) {
  unsigned long long r;
  udivmod(n < 0 ? -(unsigned long long)n : n, d < 0 ? -(unsigned long long)d : d, &r);
  return n < 0 ? -(long long)r : (long long)r;
}
