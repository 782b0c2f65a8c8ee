//! The local spool: CallEvent rows the database could not take, as JSON lines in an
//! append-only file, fsync'd per batch, read back in order. One writer per file.
//!
//! A crash (or SIGKILL) in the middle of an append can leave a torn last line: reading skips
//! it, and the next append starts on a new line so the rows after it are kept.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::calls::EventRow;

/// Spool failures.
#[derive(Debug, thiserror::Error)]
#[error("event spool {path}: {source}")]
pub struct SpoolError {
    /// The file.
    pub path: String,
    /// Why.
    pub source: std::io::Error,
}

/// An append-only JSON-lines file of event rows.
#[derive(Debug, Clone)]
pub struct Spool {
    path: PathBuf,
}

impl Spool {
    /// The spool at `path` (created on the first append).
    pub fn new(path: impl Into<PathBuf>) -> Spool {
        Spool { path: path.into() }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
        move |source| SpoolError {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// Appends `rows` and waits until they are on disk. A torn last line left by a crash is
    /// ended first, so it cannot swallow the first new row.
    pub async fn append(&self, rows: &[EventRow]) -> Result<(), SpoolError> {
        let mut text = String::new();
        for row in rows {
            // An EventRow is strings and integers: it always serializes.
            if let Ok(line) = serde_json::to_string(row) {
                text.push_str(&line);
                text.push('\n');
            }
        }
        if let Some(parent) = self.path.parent()
            && !parent.as_os_str().is_empty()
        {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(self.err())?;
        }
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&self.path)
            .await
            .map_err(self.err())?;
        if !ends_with_newline(&mut file).await.map_err(self.err())? {
            text.insert(0, '\n');
        }
        file.write_all(text.as_bytes()).await.map_err(self.err())?;
        file.sync_data().await.map_err(self.err())?;
        Ok(())
    }

    /// Every row spooled, in order. A line that does not parse (the tail of a write cut short
    /// by a crash) is skipped and logged.
    pub async fn read(&self) -> Result<Vec<EventRow>, SpoolError> {
        let text = match tokio::fs::read_to_string(&self.path).await {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.err()(e)),
        };
        Ok(parse_lines(&text, &self.path))
    }

    /// Whether rows are waiting.
    pub async fn is_empty(&self) -> bool {
        match tokio::fs::metadata(&self.path).await {
            Ok(meta) => meta.len() == 0,
            Err(_) => true,
        }
    }

    /// Removes the file once its rows are stored.
    pub async fn clear(&self) -> Result<(), SpoolError> {
        match tokio::fs::remove_file(&self.path).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(self.err()(e)),
            _ => Ok(()),
        }
    }
}

/// Whether the file is empty or its last byte is a newline.
async fn ends_with_newline(file: &mut tokio::fs::File) -> std::io::Result<bool> {
    let len = file.metadata().await?.len();
    if len == 0 {
        return Ok(true);
    }
    file.seek(SeekFrom::Start(len - 1)).await?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last).await?;
    Ok(last[0] == b'\n')
}

/// The rows of a spool's text; bad lines are skipped with a warning.
pub fn parse_lines(text: &str, path: &Path) -> Vec<EventRow> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .filter_map(|(i, line)| match serde_json::from_str(line) {
            Ok(row) => Some(row),
            Err(e) => {
                tracing::warn!(spool = %path.display(), line = i + 1, "skipping a bad spool line: {e}");
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn row(seq: i64) -> EventRow {
        EventRow {
            call_id: "c".into(),
            seq,
            at_us: seq * 10,
            kind: "dtmf".into(),
            data: r#"{"digit":"1"}"#.into(),
        }
    }

    #[tokio::test]
    async fn appends_read_back_in_order_and_clear() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path().join("sub/events.spool"));
        assert!(spool.is_empty().await);
        assert!(spool.read().await.unwrap().is_empty());
        spool.append(&[row(1), row(2)]).await.unwrap();
        spool.append(&[row(3)]).await.unwrap();
        assert!(!spool.is_empty().await);
        assert_eq!(spool.read().await.unwrap(), vec![row(1), row(2), row(3)]);
        spool.clear().await.unwrap();
        assert!(spool.is_empty().await);
        spool.clear().await.unwrap();
    }

    #[tokio::test]
    async fn an_append_after_a_torn_line_keeps_every_new_row() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path().join("events.spool"));
        spool.append(&[row(1)]).await.unwrap();
        let good = serde_json::to_string(&row(2)).unwrap();
        let mut text = std::fs::read_to_string(spool.path()).unwrap();
        text.push_str(&good[..good.len() / 2]);
        std::fs::write(spool.path(), text).unwrap();
        spool.append(&[row(3), row(4)]).await.unwrap();
        assert_eq!(spool.read().await.unwrap(), vec![row(1), row(3), row(4)]);
    }

    #[test]
    fn a_torn_last_line_is_skipped() {
        let good = serde_json::to_string(&row(1)).unwrap();
        let text = format!("{good}\n{}", &good[..good.len() / 2]);
        assert_eq!(parse_lines(&text, Path::new("x")), vec![row(1)]);
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in ".*") {
            let _ = parse_lines(&text, Path::new("x"));
        }
    }
}
