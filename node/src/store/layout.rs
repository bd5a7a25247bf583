//! The store layout version: a node refuses a store written in a layout it does not
//! read, with what to do, instead of misreading it.
//!
//! Layout 1 (before issue 12) kept one sled record per row, JSON values, in the tree
//! `dataset_rows`, and had no layout record. Layout 2 keeps rows in blocks
//! (`dataset_blocks`, [`super::blocks`]).

use std::path::Path;

use crate::NodeError;

/// The layout this node writes and reads.
pub const STORE_LAYOUT: u32 = 2;
const LAYOUT_TREE: &str = "layout";
const LAYOUT_KEY: &[u8] = b"version";
/// Layout 1's row tree.
const LAYOUT_1_ROWS: &str = "dataset_rows";

/// Reads the layout record; a new store gets [`STORE_LAYOUT`]. A layout-1 store that
/// holds no rows is upgraded in place (there is nothing to convert); one with rows is
/// refused.
pub(super) fn check_or_set(db: &sled::Db, dir: &Path) -> Result<(), NodeError> {
    let tree = db.open_tree(LAYOUT_TREE).map_err(|e| NodeError::store("open tree", e))?;
    let stored = tree.get(LAYOUT_KEY).map_err(|e| NodeError::store("read layout", e))?;
    let found = match stored {
        Some(bytes) => {
            let array: [u8; 4] = bytes.as_ref().try_into().map_err(|_| NodeError::Corrupt {
                what: "store layout",
                reason: format!("{} bytes", bytes.len()),
            })?;
            u32::from_be_bytes(array)
        }
        None => {
            let has_layout_1 = db.tree_names().iter().any(|name| name.as_ref() == LAYOUT_1_ROWS.as_bytes());
            if has_layout_1 {
                let rows = db.open_tree(LAYOUT_1_ROWS).map_err(|e| NodeError::store("open tree", e))?;
                if !rows.is_empty() {
                    return Err(refusal(dir, 1));
                }
                db.drop_tree(LAYOUT_1_ROWS).map_err(|e| NodeError::store("drop layout 1 rows", e))?;
            }
            tree.insert(LAYOUT_KEY, &STORE_LAYOUT.to_be_bytes())
                .map_err(|e| NodeError::store("write layout", e))?;
            tree.flush().map_err(|e| NodeError::store("flush", e))?;
            STORE_LAYOUT
        }
    };
    if found != STORE_LAYOUT {
        return Err(refusal(dir, found));
    }
    Ok(())
}

fn refusal(dir: &Path, found: u32) -> NodeError {
    NodeError::StoreLayout {
        path: dir.to_path_buf(),
        reason: format!(
            "written in store layout {found}, this node reads layout {STORE_LAYOUT} (dataset rows in blocks); \
             its datasets cannot be read. Re-import: stop the node, move {} aside, start the node (it creates an \
             empty store) and import every dataset again from its CSV; contracts must then be proposed and \
             signed again",
            dir.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn a_store_with_layout_1_rows_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("store");
        {
            // What a node before issue 12 left: one JSON record per row, no layout key.
            let db = sled::open(&path).unwrap_or_else(|e| panic!("{e}"));
            let rows = db.open_tree(LAYOUT_1_ROWS).unwrap_or_else(|e| panic!("{e}"));
            let mut key = b"loan_book\0".to_vec();
            key.extend_from_slice(&1u64.to_be_bytes());
            key.extend_from_slice(b"\x0091350203MA31XEK09P");
            rows.insert(key, br#"[{"Integer":3}]"#.to_vec()).unwrap_or_else(|e| panic!("{e}"));
            db.flush().unwrap_or_else(|e| panic!("{e}"));
        }
        let error =
            crate::store::once_released(|| Store::open(&path)).expect_err("a layout-1 store is refused");
        let message = error.to_string();
        assert!(matches!(error, NodeError::StoreLayout { .. }), "{message}");
        for part in ["layout 1", "reads layout 2", "Re-import", "import every dataset again"] {
            assert!(message.contains(part), "{part:?} in {message}");
        }
        // Refused again on the next try: nothing was changed by the refusal.
        let again = crate::store::once_released(|| Store::open(&path));
        assert!(matches!(again, Err(NodeError::StoreLayout { .. })), "{again:?}");
    }

    #[test]
    fn a_store_of_a_later_layout_is_refused_and_an_empty_layout_1_store_upgraded() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let later = dir.path().join("later");
        {
            let db = sled::open(&later).unwrap_or_else(|e| panic!("{e}"));
            let tree = db.open_tree(LAYOUT_TREE).unwrap_or_else(|e| panic!("{e}"));
            tree.insert(LAYOUT_KEY, &3u32.to_be_bytes()).unwrap_or_else(|e| panic!("{e}"));
            db.flush().unwrap_or_else(|e| panic!("{e}"));
        }
        let message =
            crate::store::once_released(|| Store::open(&later)).expect_err("layout 3 is refused").to_string();
        assert!(message.contains("written in store layout 3"), "{message}");

        let empty = dir.path().join("empty");
        {
            let db = sled::open(&empty).unwrap_or_else(|e| panic!("{e}"));
            db.open_tree(LAYOUT_1_ROWS).unwrap_or_else(|e| panic!("{e}"));
            db.flush().unwrap_or_else(|e| panic!("{e}"));
        }
        drop(crate::store::once_released(|| Store::open(&empty)).unwrap_or_else(|e| panic!("{e}")));
        let db = crate::store::once_released(|| sled::open(&empty)).unwrap_or_else(|e| panic!("{e}"));
        assert!(!db.tree_names().iter().any(|n| n.as_ref() == LAYOUT_1_ROWS.as_bytes()));
        let stored =
            db.open_tree(LAYOUT_TREE).and_then(|t| t.get(LAYOUT_KEY)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stored.as_deref(), Some(&STORE_LAYOUT.to_be_bytes()[..]));
    }
}
