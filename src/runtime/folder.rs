//! The devices folder as the run loop sees it: listings, the watch, and the folder's own
//! identity.
//!
//! Owns: debounced watcher signals turned into re-reads or listings, re-creating the
//! watch (periodically, after sleep, after a failed listing), noticing a folder that
//! vanished or was replaced (and making it again), and the junk warning. Must never:
//! read on the event loop (reads run on blocking threads with a timeout), or write
//! anything but our record.

use std::collections::BTreeSet;

use tokio::sync::mpsc;

use crate::adapters::store::Listing;
use crate::adapters::watcher::{self, WatchSignal};
use crate::core::Event;

use super::{DEBOUNCE, READ_TIMEOUT, Runtime};

impl Runtime {
    pub(super) async fn rescan(&mut self) {
        match self.store.scan_bounded(READ_TIMEOUT).await {
            Ok(listing) => {
                self.warn_junk(&listing);
                self.pending.push_back(Event::Scanned {
                    files: listing.files,
                });
            }
            Err(reason) => {
                self.pending.push_back(Event::ScanFailed { reason });
                if !self.check_folder().await && self.store.ensure_dir().is_ok() {
                    self.recreate_watcher("the folder could not be listed");
                }
            }
        }
    }

    /// Notices the devices folder being removed or replaced (deleted and made again, a
    /// sync tool swapping it): says so, makes it again if it is gone, and watches the
    /// folder now at the path; the rescan that follows shows the core whether its own
    /// record is there (it writes it again if not). Returns whether anything was done.
    pub(super) async fn check_folder(&mut self) -> bool {
        let path = self.store.devices_dir().display().to_string();
        match self.store.folder_identity() {
            Ok(identity) if Some(identity) == self.folder_identity => false,
            Ok(_) => {
                tracing::warn!(
                    parent: &self.span,
                    folder = %path,
                    "the devices folder was replaced (deleted and made again?): watching the new one and re-reading it"
                );
                self.recreate_watcher("the devices folder was replaced");
                true
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                match self.store.ensure_dir() {
                    Ok(()) => {
                        tracing::warn!(
                            parent: &self.span,
                            folder = %path,
                            "the devices folder is gone (deleted?): made it again; watching and re-reading it"
                        );
                        self.folder_gone_said = false;
                        self.recreate_watcher("the devices folder was gone");
                    }
                    Err(error) if !std::mem::replace(&mut self.folder_gone_said, true) => {
                        tracing::warn!(parent: &self.span, %error, "the devices folder is gone and cannot be made again; retrying");
                    }
                    Err(_) => {}
                }
                true
            }
            Err(error) => {
                tracing::debug!(parent: &self.span, %error, "cannot look at the devices folder");
                false
            }
        }
    }

    /// Warns once when the folder holds a lot of junk, again only after it was cleaned
    /// up and filled anew.
    pub(super) fn warn_junk(&mut self, listing: &Listing) {
        let warning = listing.junk_warning(self.store.devices_dir());
        if let Some(warning) = &warning
            && !self.junk_warned
        {
            tracing::warn!(parent: &self.span, junk = listing.junk, "{warning}");
        }
        self.junk_warned = warning.is_some();
    }

    pub(super) fn recreate_watcher(&mut self, why: &str) {
        self.watch = None;
        match watcher::watch(
            self.store.devices_dir(),
            self.config_dir_mode,
            self.watch_tx.clone(),
        ) {
            Ok(watch) => {
                tracing::debug!(parent: &self.span, why, "watcher re-created");
                self.watch = Some(watch);
                self.folder_identity = self.store.folder_identity().ok();
                // Changes made while no watch was registered are only seen by a scan.
                self.rescan_pending = true;
            }
            Err(error) => {
                tracing::warn!(parent: &self.span, %error, why, "cannot re-create the watcher; the backstop rescan still runs")
            }
        }
    }

    /// Collects a short burst of signals, then re-reads what they name.
    pub(super) async fn on_watch(
        &mut self,
        first: WatchSignal,
        rx: &mut mpsc::Receiver<WatchSignal>,
    ) {
        let mut names = BTreeSet::new();
        let mut rescan = false;
        let mut failed = None;
        let mut absorb = |signal: WatchSignal, names: &mut BTreeSet<String>| match signal {
            WatchSignal::Changed(changed) => names.extend(changed),
            WatchSignal::Rescan { .. } => rescan = true,
            WatchSignal::Failed { reason } => failed = Some(reason),
        };
        absorb(first, &mut names);
        let window = tokio::time::sleep(DEBOUNCE);
        tokio::pin!(window);
        loop {
            tokio::select! {
                _ = &mut window => break,
                Some(signal) = rx.recv() => absorb(signal, &mut names),
            }
        }
        names.remove(&self.store.temp_name());
        if let Some(reason) = failed {
            // A watch that failed (its folder removed, say) hears nothing more: look at
            // what is at the path now and watch that, even when it looks the same (a
            // folder made again may reuse the old one's inode and creation second).
            if !self.check_folder().await {
                tracing::warn!(parent: &self.span, %reason, "the folder watch failed: watching anew and re-reading the folder");
                self.recreate_watcher("the watch failed");
            }
            return;
        }
        if rescan {
            self.rescan().await;
            return;
        }
        for name in names {
            if matches!(
                crate::core::record::classify_name(&name),
                crate::core::record::NameKind::Temp | crate::core::record::NameKind::Foreign
            ) {
                continue;
            }
            let file = self.store.observe_bounded(name, READ_TIMEOUT).await;
            self.pending.push_back(Event::FileChanged { file });
        }
    }
}
