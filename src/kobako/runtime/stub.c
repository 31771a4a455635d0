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
 */
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
