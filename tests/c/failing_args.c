/* Failing calls with known arguments, for tests/tests/failing_args.rs. Built by the test with
 * `gcc -static` (and `-m32` for the 32-bit run), raw syscall(2)s so every ABI makes the same
 * calls and no libc wrapper picks another syscall.
 * usage: failing_args DIR full   (chdir DIR, then every case below; prints what it used)
 *        failing_args DIR open   (only the absolute and the unreadable openat: the 32-bit run)
 *        failing_args DIR storm N (N failing openats of one path, as fast as it can)
 *        failing_args DIR late   (40 missing paths once each, as a program's start-up looks
 *                                 for things; then, a few drains later, 300 failing openats of
 *                                 /nonexistent/failing-args/app/config.yaml) */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/capability.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

static long sys_openat(long dirfd, const char *path) {
    return syscall(SYS_openat, dirfd, path, O_RDONLY);
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    /* No capabilities: the daemon, which drops its own, may then read our working directory
     * (the kernel lets a process without CAP_SYS_PTRACE read another's /proc/PID/cwd only when
     * its capabilities cover the other's). */
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct none[2] = {{0}};
    if (syscall(SYS_capset, &hdr, none) != 0) return 7;
    if (chdir(argv[1]) != 0) return 3;
    if (strcmp(argv[2], "late") == 0) {
        char path[64];
        for (int i = 0; i < 40; i++) {
            snprintf(path, sizeof path, "/nonexistent/failing-args/start-up/%d", i);
            sys_openat(AT_FDCWD, path);
        }
        usleep(300 * 1000);
        for (int i = 0; i < 300; i++) sys_openat(AT_FDCWD, "/nonexistent/failing-args/app/config.yaml");
        return 0;
    }
    if (strcmp(argv[2], "storm") == 0) {
        long n = atol(argv[3]);
        for (long i = 0; i < n; i++) sys_openat(AT_FDCWD, "/nonexistent/failing-args/storm");
        sleep(1);
        return 0;
    }
    for (int i = 0; i < 5; i++) sys_openat(AT_FDCWD, "/nonexistent/failing-args/abs.conf");
    /* A page that is gone: the kernel fails with EFAULT, the capture counts it unreadable. */
    char *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) return 4;
    munmap(page, 4096);
    for (int i = 0; i < 6; i++) sys_openat(AT_FDCWD, page);
    if (strcmp(argv[2], "open") == 0) {
        sleep(1);
        return 0;
    }
    for (int i = 0; i < 4; i++) sys_openat(AT_FDCWD, "rel/missing.txt");
    long dirfd = sys_openat(AT_FDCWD, ".");
    if (dirfd < 0) return 5;
    for (int i = 0; i < 3; i++) sys_openat(dirfd, "in-dir/missing");
    char longpath[400] = "/nonexistent/failing-args/";
    while (strlen(longpath) < 300) strcat(longpath, "abcdefghijklmnopqrstuvwxyz/");
    for (int i = 0; i < 2; i++) sys_openat(AT_FDCWD, longpath);
    /* Successes, never recorded. */
    for (int i = 0; i < 10; i++) close(sys_openat(AT_FDCWD, "/"));

    /* A closed loopback port: bind one, note it, close it. */
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof in;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (bind(s, (struct sockaddr *)&in, sizeof in) != 0) return 6;
    getsockname(s, (struct sockaddr *)&in, &len);
    close(s);
    for (int i = 0; i < 2; i++) {
        s = socket(AF_INET, SOCK_STREAM, 0);
        syscall(SYS_connect, s, (struct sockaddr *)&in, sizeof in);
        close(s);
    }
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    strcpy(un.sun_path, "/nonexistent/failing-args.sock");
    for (int i = 0; i < 2; i++) {
        s = socket(AF_UNIX, SOCK_STREAM, 0);
        syscall(SYS_connect, s, (struct sockaddr *)&un, sizeof un);
        close(s);
    }
    printf("{\"dirfd\":%ld,\"port\":%d,\"long\":\"%s\"}\n", dirfd, ntohs(in.sin_port), longpath);
    fflush(stdout);
    /* Alive for a few drains: relative paths are resolved while the process lives. */
    sleep(1);
    return 0;
}
