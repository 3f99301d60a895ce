//! Synchronous replacements for the WASI I/O functions plugins reach, and plugin stdout/stderr into the log.
//!
//! wasmtime-wasi's synchronous bindings run some functions (blocking writes, stream drops, polling) through
//! a tokio `block_on`, which panics when called from inside a tokio task, and plugins are called from
//! inside client tasks. Every component built with Rust's `std` writes its panic message to stderr that way.
//! Plugins only ever get streams that never block (a log sink, a closed stdin) and no clock to wait on, so
//! these functions can be done synchronously: writes complete at once, drops just drop, and everything polls
//! as ready (a plugin "sleeping" loops until its deadline traps it).

use std::sync::Arc;

use bytes::Bytes;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, ResourceType};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::bindings::io::streams::StreamError as WitStreamError;
use wasmtime_wasi::p2::{
    DynInputStream, DynOutputStream, DynPollable, OutputStream, Pollable, StreamResult,
};

use super::host::PluginState;

/// The wasi:io version wasmtime-wasi links (components built against any 0.2.x match it).
const IO: &str = "0.2.12";
/// A plugin's output line longer than this is cut (and the rest of it dropped).
const MAX_LINE: usize = 4096;

/// Replaces the tokio-bound wasi:io functions in `linker` with synchronous ones.
pub fn add_sync_io(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut streams = linker.instance(&format!("wasi:io/streams@{IO}"))?;
    streams.resource(
        "output-stream",
        ResourceType::host::<DynOutputStream>(),
        |mut store, rep| {
            store
                .data_mut()
                .table_mut()
                .delete(Resource::<DynOutputStream>::new_own(rep))?;
            Ok(())
        },
    )?;
    streams.resource(
        "input-stream",
        ResourceType::host::<DynInputStream>(),
        |mut store, rep| {
            store
                .data_mut()
                .table_mut()
                .delete(Resource::<DynInputStream>::new_own(rep))?;
            Ok(())
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.blocking-write-and-flush",
        |mut store: StoreContextMut<'_, PluginState>,
         (stream, bytes): (Resource<DynOutputStream>, Vec<u8>)| {
            Ok((write_all(&mut store, &stream, Bytes::from(bytes)),))
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.blocking-write-zeroes-and-flush",
        |mut store: StoreContextMut<'_, PluginState>,
         (stream, len): (Resource<DynOutputStream>, u64)| {
            let len = usize::try_from(len).unwrap_or(usize::MAX).min(1 << 20);
            Ok((write_all(&mut store, &stream, Bytes::from(vec![0; len])),))
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.blocking-flush",
        |mut store: StoreContextMut<'_, PluginState>, (stream,): (Resource<DynOutputStream>,)| {
            let s = store.data_mut().table_mut().get_mut(&stream)?;
            Ok((s.flush().map_err(|_| WitStreamError::Closed),))
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.blocking-splice",
        |_store: StoreContextMut<'_, PluginState>,
         (_dst, _src, _len): (Resource<DynOutputStream>, Resource<DynInputStream>, u64)| {
            Ok((Err::<u64, _>(WitStreamError::Closed),))
        },
    )?;
    streams.func_wrap(
        "[method]input-stream.blocking-read",
        |_store: StoreContextMut<'_, PluginState>,
         (_stream, _len): (Resource<DynInputStream>, u64)| {
            // Plugins have no stdin: it is closed.
            Ok((Err::<Vec<u8>, _>(WitStreamError::Closed),))
        },
    )?;
    streams.func_wrap(
        "[method]input-stream.blocking-skip",
        |_store: StoreContextMut<'_, PluginState>,
         (_stream, _len): (Resource<DynInputStream>, u64)| {
            Ok((Err::<u64, _>(WitStreamError::Closed),))
        },
    )?;
    let mut poll = linker.instance(&format!("wasi:io/poll@{IO}"))?;
    poll.func_wrap(
        "poll",
        |_store: StoreContextMut<'_, PluginState>, (list,): (Vec<Resource<DynPollable>>,)| {
            let ready: Vec<u32> = (0..u32::try_from(list.len()).unwrap_or(u32::MAX)).collect();
            Ok((ready,))
        },
    )?;
    poll.func_wrap(
        "[method]pollable.block",
        |_store: StoreContextMut<'_, PluginState>, (_p,): (Resource<DynPollable>,)| Ok(()),
    )?;
    poll.func_wrap(
        "[method]pollable.ready",
        |_store: StoreContextMut<'_, PluginState>, (_p,): (Resource<DynPollable>,)| Ok((true,)),
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

fn write_all(
    store: &mut StoreContextMut<'_, PluginState>,
    stream: &Resource<DynOutputStream>,
    bytes: Bytes,
) -> Result<(), WitStreamError> {
    let Ok(s) = store.data_mut().table_mut().get_mut(stream) else {
        return Err(WitStreamError::Closed);
    };
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = s
            .check_write()
            .map_err(|_| WitStreamError::Closed)?
            .min(rest.len());
        if n == 0 {
            return Err(WitStreamError::Closed);
        }
        s.write(rest.split_to(n))
            .map_err(|_| WitStreamError::Closed)?;
    }
    s.flush().map_err(|_| WitStreamError::Closed)
}

/// A plugin's stdout or stderr: complete lines go to pgwarden's log, tagged with the plugin's name.
#[derive(Clone)]
pub struct LogOutput {
    pub plugin: Arc<str>,
    pub stderr: bool,
}

impl IsTerminal for LogOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only p2_stream is used (plugins are WASIp2 components); a sink keeps this honest.
        Box::new(tokio::io::sink())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(LogStream {
            out: self.clone(),
            line: Vec::new(),
        })
    }
}

struct LogStream {
    out: LogOutput,
    line: Vec<u8>,
}

impl LogStream {
    fn emit(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.line);
        let text = text.trim_end();
        let plugin = &*self.out.plugin;
        if self.out.stderr {
            tracing::warn!(plugin, "stderr: {text}");
        } else {
            tracing::info!(plugin, "stdout: {text}");
        }
        self.line.clear();
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogStream {
    async fn ready(&mut self) {}
}

impl OutputStream for LogStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        for &b in &bytes {
            if b == b'\n' {
                self.emit();
            } else if self.line.len() < MAX_LINE {
                self.line.push(b);
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl Drop for LogStream {
    fn drop(&mut self) {
        self.emit();
    }
}
