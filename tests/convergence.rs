//! The convergence property: random appends, sync orders, faults and restarts on 3 to 5 nodes
//! end, after a quiet round, with invariants 1, 2, 3, 5 and 6 of DESIGN.md holding.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use proptest::prelude::*;
use synckit::DynResolver;
use synckit::resolve::{AdditiveMerge, FirstWriteWins, LastWriteWins, ManualReview};
use synckit::testkit::sim::{Op, Sim};

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0usize..5, 0u8..4, any::<bool>())
            .prop_map(|(node, aggregate, checked)| Op::Append { node, aggregate, checked: checked || aggregate < 2 }),
        4 => (0usize..5).prop_map(Op::Sync),
        1 => (0usize..5).prop_map(Op::Push),
        1 => (0usize..5).prop_map(Op::Pull),
        1 => (0usize..5, 1u8..5).prop_map(|(n, k)| Op::FailNext(n, k)),
        1 => (0usize..5).prop_map(Op::LoseResponse),
        1 => (0usize..5).prop_map(Op::Restart),
        1 => (0usize..5, 1u8..12).prop_map(|(n, k)| Op::Interrupt(n, k)),
        2 => (1u16..300).prop_map(Op::Tick),
    ]
}

fn resolver(which: u8) -> DynResolver {
    match which {
        0 => Arc::new(LastWriteWins),
        1 => Arc::new(FirstWriteWins),
        2 => Arc::new(AdditiveMerge),
        _ => Arc::new(ManualReview),
    }
}

fn run(nodes: usize, which: u8, ops: &[Op]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut sim = Sim::new(nodes, resolver(which)).await;
        for op in ops {
            sim.apply(op).await;
            sim.check_progress().await;
        }
        sim.quiesce().await;
        sim.check_invariants().await;
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, max_shrink_iters: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn nodes_converge_under_faults(
        nodes in 3usize..=5,
        which in 0u8..4,
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        run(nodes, which, &ops);
    }
}

/// A fixed heavy case, so the harness is known to exercise conflicts, faults and restarts.
#[test]
fn dense_conflicting_workload_converges() {
    let mut ops = Vec::new();
    for round in 0..30u8 {
        for node in 0..4 {
            ops.push(Op::Append {
                node,
                aggregate: round % 2,
                checked: true,
            });
        }
        ops.push(Op::Tick(7));
        ops.push(Op::LoseResponse(usize::from(round) % 4));
        ops.push(Op::Sync(usize::from(round) % 4));
        ops.push(Op::Interrupt(usize::from(round + 1) % 4, round % 9 + 1));
        ops.push(Op::FailNext(usize::from(round + 2) % 4, 2));
        ops.push(Op::Sync(usize::from(round + 2) % 4));
        ops.push(Op::Restart(usize::from(round + 3) % 4));
    }
    for which in 0..4 {
        run(4, which, &ops);
    }
}
