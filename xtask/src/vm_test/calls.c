/* vm-test's known workload: a child making exactly GETPPID getppid() and OPENAT failing openat()
 * calls and nothing else that returns (it ends with exit_group, which never does), so the
 * daemon's /stats?pid=CHILD must show exactly those. Prints the child's pid.
 * The child comes from a raw clone: glibc's fork() makes syscalls of its own in the child. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: calls GETPPID OPENAT\n");
        return 2;
    }
    long getppids = atol(argv[1]), openats = atol(argv[2]);
    long pid = syscall(SYS_clone, (long)SIGCHLD, 0L, 0L, 0L, 0L);
    if (pid < 0) {
        perror("clone");
        return 1;
    }
    if (pid == 0) {
        for (long i = 0; i < getppids; i++)
            syscall(SYS_getppid);
        for (long i = 0; i < openats; i++)
            syscall(SYS_openat, AT_FDCWD, "/nonexistent/vm-test", O_RDONLY);
        syscall(SYS_exit_group, 0);
    }
    printf("%ld\n", pid);
    int status;
    if (waitpid((pid_t)pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return 1;
    return 0;
}
