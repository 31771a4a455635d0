/*
 * kobako-stub: the last step before a container process runs.
 *
 * The runtime copies this static binary into a sealed memfd and executes it
 * from there; the stub then executes the container's program. So when the
 * container's program is a script like "#!/proc/self/exe" (CVE-2019-5736),
 * /proc/self/exe names the sealed memfd, which nobody can write, and never
 * the host's Python interpreter.
 *
 * usage: kobako-stub PATH ARGV0 [ARGS...]
 *
 * On x86_64 and aarch64 it is built without libc (-nostdlib), so the runtime
 * copies a few hundred bytes per container instead of a static libc.
 */

#if defined(__x86_64__) || defined(__aarch64__)

#define SYS_WRITE_X86 1
#define SYS_EXECVE_X86 59
#define SYS_EXIT_X86 60
#define SYS_WRITE_ARM 64
#define SYS_EXECVE_ARM 221
#define SYS_EXIT_ARM 93

static long sys3(long n, long a, long b, long c)
{
    long ret;
#if defined(__x86_64__)
    __asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c)
                     : "rcx", "r11", "memory");
#else
    register long x8 __asm__("x8") = n;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2) : "memory");
    ret = x0;
#endif
    return ret;
}

#if defined(__x86_64__)
#define NR(name) SYS_##name##_X86
__asm__(".text\n.globl _start\n_start:\n  mov %rsp, %rdi\n  and $-16, %rsp\n  call stub_main\n");
#else
#define NR(name) SYS_##name##_ARM
__asm__(".text\n.globl _start\n_start:\n  mov x0, sp\n  bl stub_main\n");
#endif

static long length(const char *s)
{
    long n = 0;
    while (s[n])
        n++;
    return n;
}

static void say(const char *s)
{
    sys3(NR(WRITE), 2, (long)s, length(s));
}

__attribute__((noreturn, used)) void stub_main(long *sp)
{
    long argc = sp[0];
    char **argv = (char **)(sp + 1);
    char **envp = argv + argc + 1;

    if (argc < 3) {
        say("kobako-stub: usage: kobako-stub PATH ARGV0 [ARGS...]\n");
        sys3(NR(EXIT), 127, 0, 0);
    }
    long err = -sys3(NR(EXECVE), (long)argv[1], (long)&argv[2], (long)envp);
    char digits[4] = {(char)('0' + err / 100 % 10), (char)('0' + err / 10 % 10),
                      (char)('0' + err % 10), 0};
    say("exec ");
    say(argv[1]);
    say(": failed with errno ");
    say(digits);
    say("\n");
    sys3(NR(EXIT), err == 2 ? 127 : 126, 0, 0); /* ENOENT -> 127, as shells do */
    for (;;) {
    }
}

#else /* other architectures: the same with libc */

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv)
{
    if (argc < 3) {
        fputs("kobako-stub: usage: kobako-stub PATH ARGV0 [ARGS...]\n", stderr);
        return 127;
    }
    execve(argv[1], &argv[2], environ);
    int err = errno;
    fprintf(stderr, "exec %s: %s\n", argv[1], strerror(err));
    return err == ENOENT ? 127 : 126;
}

#endif
