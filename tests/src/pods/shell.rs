//! The pod's one container, as far as a test can tell through `exec`, `attach` and `cp`: a tiny
//! in-memory filesystem and a handful of commands, with the stdio of a real process (stdin until
//! EOF, stdout and stderr, an exit code, terminal size events with a TTY).
//!
//! | command | does |
//! |---|---|
//! | `echo [-n] ARG…` | prints its arguments |
//! | `cat [FILE…]` | prints the files, or copies stdin to stdout until EOF |
//! | `test -d\|-f\|-e PATH` | exit 0 if PATH is a directory / file / either |
//! | `tar cf - PATH…` | a tar of the paths on stdout, leading `/` removed, as GNU tar |
//! | `tar [-]xmf - [-C DIR]` | extracts the tar on stdin into DIR (default `/`) |
//! | `stty size` | with a TTY: `ROWS COLS` of the first resize event |
//! | `sh -c 'A; B; …'` | runs the commands in order; `CMD >&2` sends CMD's stdout to stderr; `exit N` |
//! | `true`, `false` | exit 0, exit 1 |
//!
//! Anything else exits 127 with `sh`'s message on stderr.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

/// Terminal size, as the resize channel carries it (`{"Width":80,"Height":24}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TerminalSize {
    pub width: u16,
    pub height: u16,
}

/// Where a process writes: one of the session's channels. Writes go out in order with every
/// other write of the session (including the final status), whatever the transport.
#[derive(Clone)]
pub struct Output(Arc<dyn Fn(Bytes) + Send + Sync>);

impl Output {
    pub fn new(write: impl Fn(Bytes) + Send + Sync + 'static) -> Self {
        Output(Arc::new(write))
    }

    pub fn write(&self, data: impl Into<Bytes>) {
        let data = data.into();
        if !data.is_empty() {
            (self.0)(data)
        }
    }
}

/// A process's standard streams; `None` where the client did not ask for one.
pub struct Stdio {
    /// Ends when the client closes stdin (SPDY FIN, the v5 CLOSE signal).
    pub stdin: Option<mpsc::UnboundedReceiver<Bytes>>,
    pub stdout: Option<Output>,
    pub stderr: Option<Output>,
    pub resize: Option<mpsc::UnboundedReceiver<TerminalSize>>,
    pub tty: bool,
}

impl Stdio {
    fn out(&self, data: impl Into<Bytes>) {
        if let Some(out) = &self.stdout {
            out.write(data);
        }
    }

    fn err(&self, data: impl Into<Bytes>) {
        // With a TTY, stderr is the terminal too.
        match (&self.stderr, self.tty) {
            (Some(err), _) => err.write(data),
            (None, true) => self.out(data),
            (None, false) => {}
        }
    }

    async fn read_stdin(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        if let Some(stdin) = &mut self.stdin {
            while let Some(chunk) = stdin.recv().await {
                all.extend_from_slice(&chunk);
            }
        }
        all
    }
}

/// The container's filesystem.
#[derive(Debug)]
pub struct Filesystem {
    dirs: BTreeSet<String>,
    files: BTreeMap<String, Vec<u8>>,
}

impl Filesystem {
    /// `/`, `/tmp`, `/etc/hostname` and `/data/report.txt`.
    pub fn new(hostname: &str) -> Self {
        let mut fs = Filesystem {
            dirs: ["/", "/etc", "/tmp", "/data"]
                .into_iter()
                .map(String::from)
                .collect(),
            files: BTreeMap::new(),
        };
        fs.write("/etc/hostname", format!("{hostname}\n").into_bytes());
        fs.write("/data/report.txt", b"edge report: all green\n".to_vec());
        fs
    }

    pub fn read(&self, path: &str) -> Option<Vec<u8>> {
        self.files.get(&normalize(path)).cloned()
    }

    /// Writes a file, creating its directories.
    pub fn write(&mut self, path: &str, contents: Vec<u8>) {
        let path = normalize(path);
        let mut dir = parent(&path);
        while dir != "/" {
            self.dirs.insert(dir.clone());
            dir = parent(&dir);
        }
        self.files.insert(path, contents);
    }

    fn is_dir(&self, path: &str) -> bool {
        self.dirs.contains(&normalize(path))
    }

    fn is_file(&self, path: &str) -> bool {
        self.files.contains_key(&normalize(path))
    }
}

/// `/a//b/./c/` → `/a/b/c`; relative paths are taken from `/`.
fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

fn parent(path: &str) -> String {
    match path.rsplit_once('/') {
        Some(("", _)) | None => "/".to_string(),
        Some((dir, _)) => dir.to_string(),
    }
}

/// Runs `command` to completion; returns its exit code.
pub async fn run(fs: &Mutex<Filesystem>, command: &[String], io: &mut Stdio) -> i32 {
    let Some((program, args)) = command.split_first() else {
        io.err("sh: no command\n");
        return 127;
    };
    match program.as_str() {
        "sh" if args.first().map(String::as_str) == Some("-c") && args.len() == 2 => {
            script(fs, &args[1], io).await
        }
        _ => simple(fs, program, args, io).await,
    }
}

/// `sh -c`: `;`-separated commands, words split on blanks with `'…'` quoting.
async fn script(fs: &Mutex<Filesystem>, script: &str, io: &mut Stdio) -> i32 {
    let mut code = 0;
    for command in script.split(';') {
        let mut words = split_words(command);
        if words.is_empty() {
            continue;
        }
        if words[0] == "exit" {
            return words.get(1).and_then(|n| n.parse().ok()).unwrap_or(code);
        }
        let to_stderr = words.last().map(String::as_str) == Some(">&2");
        if to_stderr {
            words.pop();
        }
        let (program, args) = words.split_first().expect("not empty");
        code = if to_stderr {
            // Swap stdout for stderr for this one command.
            let stdout = io.stdout.take();
            io.stdout = io.stderr.clone();
            let code = Box::pin(simple(fs, program, args, io)).await;
            io.stdout = stdout;
            code
        } else {
            Box::pin(simple(fs, program, args, io)).await
        };
    }
    code
}

fn split_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

async fn simple(fs: &Mutex<Filesystem>, program: &str, args: &[String], io: &mut Stdio) -> i32 {
    match program {
        "true" => 0,
        "false" => 1,
        "echo" => {
            let (newline, args) = match args.first().map(String::as_str) {
                Some("-n") => (false, &args[1..]),
                _ => (true, args),
            };
            let mut line = args.join(" ");
            if newline {
                line.push('\n');
            }
            io.out(line);
            0
        }
        "cat" if args.is_empty() => {
            if let Some(stdin) = &mut io.stdin {
                while let Some(chunk) = stdin.recv().await {
                    if let Some(out) = &io.stdout {
                        out.write(chunk);
                    }
                }
            }
            0
        }
        "cat" => {
            let mut code = 0;
            for path in args {
                let contents = fs.lock().unwrap().read(path);
                match contents {
                    Some(contents) => io.out(contents),
                    None => {
                        io.err(format!("cat: {path}: No such file or directory\n"));
                        code = 1;
                    }
                }
            }
            code
        }
        "test" => {
            let fs = fs.lock().unwrap();
            let ok = match (args.first().map(String::as_str), args.get(1)) {
                (Some("-d"), Some(path)) => fs.is_dir(path),
                (Some("-f"), Some(path)) => fs.is_file(path),
                (Some("-e"), Some(path)) => fs.is_dir(path) || fs.is_file(path),
                _ => false,
            };
            i32::from(!ok)
        }
        "tar" => tar(fs, args, io).await,
        "stty" if args.first().map(String::as_str) == Some("size") => {
            let size = match (&mut io.resize, io.tty) {
                (Some(resize), true) => resize.recv().await,
                _ => None,
            };
            match size {
                Some(size) => {
                    io.out(format!("{} {}\n", size.height, size.width));
                    0
                }
                None => {
                    io.err("stty: 'standard input': Inappropriate ioctl for device\n");
                    1
                }
            }
        }
        other => {
            io.err(format!("sh: {other}: not found\n"));
            127
        }
    }
}

/// `tar cf - PATH…` and `tar [-]xmf - [-C DIR]`, the two forms `kubectl cp` runs.
async fn tar(fs: &Mutex<Filesystem>, args: &[String], io: &mut Stdio) -> i32 {
    let mut mode = None;
    let mut dir = "/".to_string();
    let mut paths = Vec::new();
    let mut args = args.iter();
    let mut first = true;
    while let Some(arg) = args.next() {
        let is_mode = first && !arg.starts_with("--");
        first = false;
        if arg == "-C" {
            dir = args.next().cloned().unwrap_or_default();
        } else if arg.starts_with("--") {
            // --no-same-permissions, --no-same-owner: nothing to keep here anyway.
        } else if is_mode {
            let letters = arg.trim_start_matches('-');
            mode = letters.chars().find(|c| matches!(c, 'c' | 'x'));
            if !letters.contains('f') {
                io.err("tar: only archives on stdin/stdout (f -) are supported\n");
                return 2;
            }
            // The archive name follows the mode.
            if args.next().map(String::as_str) != Some("-") {
                io.err("tar: only archives on stdin/stdout (f -) are supported\n");
                return 2;
            }
        } else {
            paths.push(arg.clone());
        }
    }
    match mode {
        Some('c') => {
            let mut builder = ::tar::Builder::new(Vec::new());
            let mut missing = false;
            let mut stripped = false;
            {
                let fs = fs.lock().unwrap();
                for path in &paths {
                    let path = normalize(path);
                    let entries: Vec<(&String, &Vec<u8>)> = fs
                        .files
                        .iter()
                        .filter(|(name, _)| **name == path || name.starts_with(&format!("{path}/")))
                        .collect();
                    if entries.is_empty() && !fs.is_dir(&path) {
                        io.err(format!(
                            "tar: {path}: Cannot stat: No such file or directory\n"
                        ));
                        missing = true;
                        continue;
                    }
                    for (name, contents) in entries {
                        stripped = true;
                        let mut header = ::tar::Header::new_gnu();
                        header.set_size(contents.len() as u64);
                        header.set_mode(0o644);
                        header.set_mtime(0);
                        header.set_entry_type(::tar::EntryType::Regular);
                        if builder
                            .append_data(&mut header, name.trim_start_matches('/'), &contents[..])
                            .is_err()
                        {
                            return 2;
                        }
                    }
                }
            }
            if stripped {
                io.err("tar: Removing leading `/' from member names\n");
            }
            match builder.into_inner() {
                Ok(archive) => io.out(archive),
                Err(_) => return 2,
            }
            if missing {
                io.err("tar: Exiting with failure status due to previous errors\n");
                2
            } else {
                0
            }
        }
        Some('x') => {
            let archive = io.read_stdin().await;
            let mut reader = ::tar::Archive::new(&archive[..]);
            let entries = match reader.entries() {
                Ok(entries) => entries,
                Err(e) => {
                    io.err(format!("tar: {e}\n"));
                    return 2;
                }
            };
            for entry in entries {
                let mut entry = match entry {
                    Ok(entry) => entry,
                    Err(e) => {
                        io.err(format!("tar: {e}\n"));
                        return 2;
                    }
                };
                let name = match entry.path() {
                    Ok(name) => name.to_string_lossy().into_owned(),
                    Err(_) => continue,
                };
                let target = normalize(&format!("{dir}/{name}"));
                match entry.header().entry_type() {
                    ::tar::EntryType::Directory => {
                        fs.lock().unwrap().dirs.insert(target);
                    }
                    ::tar::EntryType::Regular => {
                        let mut contents = Vec::new();
                        if std::io::Read::read_to_end(&mut entry, &mut contents).is_err() {
                            return 2;
                        }
                        fs.lock().unwrap().write(&target, contents);
                    }
                    _ => {}
                }
            }
            0
        }
        _ => {
            io.err("tar: You must specify one of the '-Acdtrux' options\n");
            2
        }
    }
}

/// What `kubectl attach` reaches: the container's main process. It greets, then echoes stdin
/// upper-cased until stdin closes, and exits (a container with `stdinOnce`).
pub async fn main_process(io: &mut Stdio) -> i32 {
    io.out("main: ready\n");
    if let Some(stdin) = &mut io.stdin {
        while let Some(chunk) = stdin.recv().await {
            if let Some(out) = &io.stdout {
                out.write(chunk.to_ascii_uppercase());
            }
        }
    }
    io.out("main: bye\n");
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a process wrote to one of its outputs.
    type Captured = Arc<Mutex<Vec<u8>>>;

    fn collect() -> (Output, Captured) {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        (
            Output::new(move |b| sink.lock().unwrap().extend_from_slice(&b)),
            buf,
        )
    }

    fn stdio(stdin: Option<&[u8]>) -> (Stdio, Captured, Captured) {
        let (out, out_buf) = collect();
        let (err, err_buf) = collect();
        let stdin = stdin.map(|data| {
            let (tx, rx) = mpsc::unbounded_channel();
            tx.send(Bytes::copy_from_slice(data)).unwrap();
            rx
        });
        (
            Stdio {
                stdin,
                stdout: Some(out),
                stderr: Some(err),
                resize: None,
                tty: false,
            },
            out_buf,
            err_buf,
        )
    }

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[tokio::test]
    async fn tar_round_trips_what_kubectl_cp_sends_and_expects() {
        let fs = Mutex::new(Filesystem::new("pod"));
        let (mut io, out, err) = stdio(None);
        assert_eq!(
            run(&fs, &words("tar cf - /data/report.txt"), &mut io).await,
            0
        );
        assert!(String::from_utf8_lossy(&err.lock().unwrap()).contains("Removing leading"));
        let archive = out.lock().unwrap().clone();
        let mut names = Vec::new();
        for entry in ::tar::Archive::new(&archive[..]).entries().unwrap() {
            names.push(
                entry
                    .unwrap()
                    .path()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
        assert_eq!(names, ["data/report.txt"]);

        // kubectl cp names the entry after the destination's base name and passes -C its dir.
        let mut builder = ::tar::Builder::new(Vec::new());
        let mut header = ::tar::Header::new_gnu();
        header.set_size(3);
        builder
            .append_data(&mut header, "up.txt", &b"abc"[..])
            .unwrap();
        let (mut io, _, _) = stdio(Some(&builder.into_inner().unwrap()));
        assert_eq!(run(&fs, &words("tar -xmf - -C /tmp/in"), &mut io).await, 0);
        assert_eq!(fs.lock().unwrap().read("/tmp/in/up.txt").unwrap(), b"abc");
        assert_eq!(run(&fs, &words("test -d /tmp/in"), &mut io).await, 0);
        assert_eq!(run(&fs, &words("test -d /tmp/in/up.txt"), &mut io).await, 1);
    }

    #[tokio::test]
    async fn sh_runs_commands_in_order_with_redirects_and_exit_codes() {
        let fs = Mutex::new(Filesystem::new("pod"));
        let (mut io, out, err) = stdio(None);
        let command = vec![
            "sh".to_string(),
            "-c".to_string(),
            "echo 'to out'; echo to err >&2; exit 3; echo never".to_string(),
        ];
        assert_eq!(run(&fs, &command, &mut io).await, 3);
        assert_eq!(&*out.lock().unwrap(), b"to out\n");
        assert_eq!(&*err.lock().unwrap(), b"to err\n");
    }
}
