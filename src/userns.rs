//! Whether the ids the config admits exist in this process's user namespace.
//!
//! Inside a user namespace (systemd's `PrivateUsers=`, a rootless container) every uid or gid
//! outside the namespace's map shows up as the overflow id 65534 in `SO_PEERCRED`. A peer the
//! config allows by such an id can then never match, and would get a 403 with no hint why; so
//! the daemon says so once, at start.

/// The ranges of one `/proc/self/{uid,gid}_map`: (first id inside, first id outside, count).
type IdMap = Vec<(u64, u64, u64)>;

/// Parses a `uid_map`/`gid_map` text; malformed lines are skipped.
pub fn parse_id_map(text: &str) -> IdMap {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace().map(|n| n.parse::<u64>().ok());
            Some((f.next()??, f.next()??, f.next()??))
        })
        .collect()
}

/// The ids of `wanted` (as seen from the parent namespace, i.e. the node) that `map` does not map.
pub fn unmapped(map: &IdMap, wanted: &[u32]) -> Vec<u32> {
    wanted
        .iter()
        .copied()
        .filter(|&id| {
            !map.iter().any(|&(_, outside, count)| (outside..outside.saturating_add(count)).contains(&u64::from(id)))
        })
        .collect()
}

/// Logs a warning naming the allowed uids and gids that this namespace cannot see.
pub fn warn_unmapped(uids: &[u32], gids: &[u32]) {
    let read = |f: &str| std::fs::read_to_string(f).ok().map(|t| parse_id_map(&t));
    let (Some(uid_map), Some(gid_map)) = (read("/proc/self/uid_map"), read("/proc/self/gid_map")) else {
        return;
    };
    let (bad_uids, bad_gids) = (unmapped(&uid_map, uids), unmapped(&gid_map, gids));
    if bad_uids.is_empty() && bad_gids.is_empty() {
        return;
    }
    tracing::warn!(
        unmapped_uids = ?bad_uids,
        unmapped_gids = ?bad_gids,
        "the daemon runs in a user namespace that does not map these allowed ids: peers with them \
         appear as 65534 and will be refused (remove PrivateUsers= or map the ids)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_map_maps_everything_and_a_root_only_map_does_not() {
        let full = parse_id_map("         0          0 4294967295\n");
        assert!(unmapped(&full, &[0, 1000, 65533]).is_empty());
        // systemd PrivateUsers=yes: root and the service's own id only.
        let private = parse_id_map("0 0 1\n61234 61234 1\n");
        assert_eq!(unmapped(&private, &[0, 1000, 61234]), vec![1000]);
        assert_eq!(unmapped(&parse_id_map("garbage\n"), &[5]), vec![5]);
    }
}
