//! `exec` and `attach`: a process's stdio over the two transports kubectl speaks.
//!
//! ```text
//! WebSocket, subprotocol v5.channel.k8s.io (kubectl >= 1.30) or v4.channel.k8s.io:
//!   every binary message is [channel byte][data]
//!   0 stdin (client → server)    1 stdout    2 stderr    3 error: a Status JSON at the end
//!   4 resize: {"Width":W,"Height":H} (client → server, with a TTY)
//!   v5 only: [255, channel] = the sender closed that channel (stdin EOF)
//!   the server first sends an empty message on the lowest channel it writes, then the output,
//!   the Status on 3, and a close frame (1000)
//!
//! SPDY/3.1, X-Stream-Protocol-Version: v4.channel.k8s.io:
//!   the client opens one stream per channel, header streamtype = error|stdin|stdout|stderr|resize
//!   the server answers once all it expects exist, then: output DATA, FIN on stdout/stderr,
//!   the Status on the error stream + FIN, GOAWAY
//! ```
//!
//! Query parameters (`command` repeated, `container`, `stdin`, `stdout`, `stderr`, `tty`) say
//! which channels exist, as for kubelet.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::shell::{self, Filesystem, Output, Stdio, TerminalSize};
use super::{api, spdy};

/// The WebSocket channel protocol with the CLOSE signal (kubectl >= 1.30).
pub const V5: &str = "v5.channel.k8s.io";
/// The WebSocket (and SPDY) channel protocol whose error channel carries a Status.
pub const V4: &str = "v4.channel.k8s.io";
const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
/// v5: `[CLOSE, channel]` says the sender is done with `channel`.
const CLOSE: u8 = 255;

/// Which streams the client asked for.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl Options {
    pub fn from_query(query: &str) -> Options {
        let mut options = Options::default();
        let yes = |v: &str| v == "true" || v == "1";
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "command" => options.command.push(value.into_owned()),
                "stdin" => options.stdin = yes(&value),
                "stdout" => options.stdout = yes(&value),
                "stderr" => options.stderr = yes(&value),
                "tty" => options.tty = yes(&value),
                _ => {}
            }
        }
        // kubelet: no separate stderr with a TTY.
        if options.tty {
            options.stderr = false;
        }
        options
    }
}

/// What runs: a command (`exec`) or the container's main process (`attach`).
#[derive(Clone, Debug)]
pub enum Program {
    Exec(Vec<String>),
    Attach,
}

async fn run(program: &Program, fs: &Mutex<Filesystem>, io: &mut Stdio) -> i32 {
    match program {
        Program::Exec(command) => shell::run(fs, command, io).await,
        Program::Attach => shell::main_process(io).await,
    }
}

/// Serves one session on a WebSocket whose subprotocol is [`V5`] or [`V4`].
pub async fn over_websocket<S>(
    ws: WebSocketStream<S>,
    protocol: &str,
    options: Options,
    program: Program,
    fs: Arc<Mutex<Filesystem>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let v5 = protocol == V5;
    let (mut sink, mut source) = ws.split();
    let (queue, mut outgoing) = mpsc::unbounded_channel::<Message>();
    tokio::spawn(async move {
        while let Some(message) = outgoing.recv().await {
            let close = matches!(message, Message::Close(_));
            if sink.send(message).await.is_err() || close {
                break;
            }
        }
    });
    let channel = |number: u8| {
        let queue = queue.clone();
        Output::new(move |data: Bytes| {
            let mut message = Vec::with_capacity(data.len() + 1);
            message.push(number);
            message.extend_from_slice(&data);
            let _ = queue.send(Message::Binary(message.into()));
        })
    };

    let (stdin_tx, stdin_rx) = mpsc::unbounded_channel();
    let (resize_tx, resize_rx) = mpsc::unbounded_channel();
    let mut stdin_tx = options.stdin.then_some(stdin_tx);
    tokio::spawn(async move {
        while let Some(Ok(message)) = source.next().await {
            let Message::Binary(data) = message else {
                continue;
            };
            match data.first() {
                Some(&STDIN) => {
                    if let Some(tx) = &stdin_tx {
                        let _ = tx.send(data.slice(1..));
                    }
                }
                Some(&RESIZE) => {
                    if let Ok(size) = serde_json::from_slice::<TerminalSize>(&data[1..]) {
                        let _ = resize_tx.send(size);
                    }
                }
                Some(&CLOSE) if v5 && data.get(1) == Some(&STDIN) => stdin_tx = None,
                _ => {}
            }
        }
    });

    // Tell the client the connection is up: an empty message on the lowest channel we write.
    let first = if options.stdout {
        STDOUT
    } else if options.stderr {
        STDERR
    } else {
        ERROR
    };
    let _ = queue.send(Message::Binary(vec![first].into()));
    let mut io = Stdio {
        stdin: options.stdin.then_some(stdin_rx),
        stdout: options.stdout.then(|| channel(STDOUT)),
        stderr: options.stderr.then(|| channel(STDERR)),
        resize: options.tty.then_some(resize_rx),
        tty: options.tty,
    };
    let code = run(&program, &fs, &mut io).await;
    channel(ERROR).write(api::exit_status(code).to_string());
    let _ = queue.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    })));
}

/// Serves one session on a SPDY connection (`v4.channel.k8s.io`).
pub async fn over_spdy(
    mut session: spdy::Session,
    options: Options,
    program: Program,
    fs: Arc<Mutex<Filesystem>>,
) {
    let expected = 1
        + usize::from(options.stdin)
        + usize::from(options.stdout)
        + usize::from(options.stderr)
        + usize::from(options.tty);
    let (mut error, mut stdin, mut stdout, mut stderr, mut resize) = (None, None, None, None, None);
    let mut received = 0;
    while received < expected {
        let Some(stream) = session.streams.recv().await else {
            return;
        };
        received += 1;
        match stream.header("streamtype") {
            Some("error") => error = Some(stream),
            Some("stdin") => stdin = Some(stream),
            Some("stdout") => stdout = Some(stream),
            Some("stderr") => stderr = Some(stream),
            Some("resize") => resize = Some(stream),
            other => eprintln!("test upstream: unexpected SPDY stream type {other:?}"),
        }
    }
    let writer = session.writer.clone();
    let output = |stream: &Option<spdy::Stream>| {
        stream.as_ref().map(|s| {
            let (writer, id) = (writer.clone(), s.id);
            Output::new(move |data| writer.data(id, data))
        })
    };
    let resize = resize.map(|mut stream| {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            // A JSON object per event, possibly split over DATA frames.
            let mut pending = Vec::new();
            while let Some(chunk) = stream.data.recv().await {
                pending.extend_from_slice(&chunk);
                let mut events =
                    serde_json::Deserializer::from_slice(&pending).into_iter::<TerminalSize>();
                for event in events.by_ref() {
                    match event {
                        Ok(size) => {
                            let _ = tx.send(size);
                        }
                        Err(_) => break,
                    }
                }
                let used = events.byte_offset();
                pending.drain(..used);
            }
        });
        rx
    });
    let mut io = Stdio {
        stdin: stdin.map(|s| s.data),
        stdout: output(&stdout),
        stderr: output(&stderr),
        resize,
        tty: options.tty,
    };
    let code = run(&program, &fs, &mut io).await;
    for stream in [&stdout, &stderr].into_iter().flatten() {
        writer.fin(stream.id);
    }
    if let Some(error) = &error {
        writer.data(error.id, api::exit_status(code).to_string().into());
        writer.fin(error.id);
    }
    writer.close();
    // Keep the session (and so the reader) until the client hangs up.
    while session.streams.recv().await.is_some() {}
}
