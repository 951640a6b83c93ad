//! Processes the tests run.

use std::process::{Child, Command, Stdio};

pub const PYTHON: &str = "/usr/bin/python3";

/// Starts `python3 -c script` with piped stdin and stdout.
pub fn python(script: &str) -> Child {
    Command::new(PYTHON)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 runs")
}

/// Waits for a child and asserts it succeeded.
pub fn finish(mut child: Child, what: &str) {
    let status = child.wait().expect("wait");
    assert!(status.success(), "{what} failed: {status}");
}

/// Compiles a small C program into `dir` and returns its path.
pub fn compile_c(dir: &std::path::Path, name: &str, source: &str) -> std::path::PathBuf {
    let src = dir.join(format!("{name}.c"));
    let bin = dir.join(name);
    std::fs::write(&src, source).expect("write C source");
    let status = Command::new("cc")
        .arg("-O1")
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .status()
        .expect("cc runs");
    assert!(status.success(), "cc failed for {name}");
    bin
}

/// `sendmmsg_flood TOTAL PORT`: one UDP socket sends one byte to TOTAL distinct loopback
/// destinations (127.0.0.1, 127.0.0.2, ...) on PORT, 1,024 per `sendmmsg` call.
pub const SENDMMSG_FLOOD: &str = r#"
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
int main(int argc, char **argv) {
    int total = atoi(argv[1]), port = atoi(argv[2]);
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    static struct sockaddr_in to[1024];
    static struct mmsghdr msgs[1024];
    static struct iovec iov;
    char byte = 'x';
    iov.iov_base = &byte; iov.iov_len = 1;
    for (int sent = 0; sent < total;) {
        int n = total - sent < 1024 ? total - sent : 1024;
        for (int i = 0; i < n; i++) {
            int k = sent + i;
            memset(&to[i], 0, sizeof to[i]);
            to[i].sin_family = AF_INET;
            to[i].sin_port = htons(port);
            to[i].sin_addr.s_addr = htonl(0x7f000000u | (1u + (unsigned)k));
            memset(&msgs[i], 0, sizeof msgs[i]);
            msgs[i].msg_hdr.msg_name = &to[i];
            msgs[i].msg_hdr.msg_namelen = sizeof to[i];
            msgs[i].msg_hdr.msg_iov = &iov;
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int r = sendmmsg(s, msgs, n, 0);
        if (r <= 0) return 1;
        sent += r;
    }
    return 0;
}
"#;

/// `fork_storm N`: N short-lived children (each exits at once), reaped as they go.
pub const FORK_STORM: &str = r#"
#include <stdlib.h>
#include <unistd.h>
#include <sys/wait.h>
int main(int argc, char **argv) {
    int n = atoi(argv[1]);
    for (int i = 0; i < n; i++) {
        pid_t p = fork();
        if (p == 0) _exit(0);
        if (p > 0 && i % 8 == 7) while (waitpid(-1, NULL, WNOHANG) > 0) {}
    }
    while (wait(NULL) > 0) {}
    return 0;
}
"#;

/// `exec_storm MARK N`: N children one after another, each `execl("/bin/true", "/bin/true",
/// "MARK-i")` with its argument built on its own stack, each waited for.
pub const EXEC_STORM: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/wait.h>
int main(int argc, char **argv) {
    int n = atoi(argv[2]);
    for (int i = 0; i < n; i++) {
        pid_t p = fork();
        if (p < 0) return 1;
        if (p == 0) {
            char arg[256];
            snprintf(arg, sizeof arg, "%s-%d", argv[1], i);
            execl("/bin/true", "/bin/true", arg, (char *)NULL);
            _exit(127);
        }
        int status;
        if (waitpid(p, &status, 0) != p || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            return 1;
    }
    return 0;
}
"#;
