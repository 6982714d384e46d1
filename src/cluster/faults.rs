//! One node at a time: stopped, killed, frozen, resumed, restarted or added.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::kafka::retry::Deadline;

use super::*;

impl LocalCluster {
    /// The pid of node `id`'s JVM, while it is up.
    pub fn node_pid(&self, id: i32) -> Option<i32> {
        match node::process_state(&self.dir, id) {
            (Some(pid), ProcessState::Running | ProcessState::Paused) => Some(pid),
            _ => None,
        }
    }

    /// The state of one node's JVM.
    pub fn process_state(&self, id: i32) -> Result<ProcessState, ClusterError> {
        self.node(id)?;
        Ok(node::process_state(&self.dir, id).1)
    }

    /// SIGTERM: a clean shutdown, waited for.
    pub async fn stop_node(&self, id: i32) -> Result<(), ClusterError> {
        self.node(id)?;
        node::signal_node(&self.dir, id, Signal::SIGTERM)?;
        // A paused node only acts on SIGTERM once it runs again.
        node::signal_node(&self.dir, id, Signal::SIGCONT)?;
        let waited = Duration::from_secs(60);
        if !self.wait_down(id, waited).await {
            return Err(ClusterError::StopTimedOut { id, waited });
        }
        self.release_supervisor(id);
        Ok(())
    }

    /// SIGKILL: a crash.
    pub async fn kill_node(&self, id: i32) -> Result<(), ClusterError> {
        self.node(id)?;
        node::signal_node(&self.dir, id, Signal::SIGKILL)?;
        self.wait_down(id, Duration::from_secs(10)).await;
        self.release_supervisor(id);
        Ok(())
    }

    /// SIGSTOP: the node freezes, as a hung broker does. Returns once it is stopped.
    pub async fn pause_node(&self, id: i32) -> Result<(), ClusterError> {
        self.node(id)?;
        node::signal_node(&self.dir, id, Signal::SIGSTOP)?;
        self.wait_for_state(id, ProcessState::Paused).await
    }

    /// SIGCONT: a paused node carries on. Returns once it runs.
    pub async fn resume_node(&self, id: i32) -> Result<(), ClusterError> {
        self.node(id)?;
        node::signal_node(&self.dir, id, Signal::SIGCONT)?;
        self.wait_for_state(id, ProcessState::Running).await
    }

    /// Signals reach every thread of a JVM a moment later; wait for the state to show it.
    async fn wait_for_state(&self, id: i32, wanted: ProcessState) -> Result<(), ClusterError> {
        let deadline = Deadline::after(Duration::from_secs(10));
        loop {
            match node::process_state(&self.dir, id).1 {
                state if state == wanted => return Ok(()),
                ProcessState::Down => return Err(ClusterError::NodeNotRunning(id)),
                _ => {}
            }
            if !deadline.sleep(Duration::from_millis(20)).await {
                return Err(ClusterError::NotReady {
                    waited: Duration::from_secs(10),
                    detail: format!("node {id} is not {wanted} yet"),
                });
            }
        }
    }

    /// Starts a stopped node and waits until it is a registered broker again.
    pub async fn start_node(&self, id: i32, timeout: Duration) -> Result<(), ClusterError> {
        let node = self.node(id)?;
        if node::process_state(&self.dir, id).1 != ProcessState::Down {
            return Err(ClusterError::NodeAlreadyRunning(id));
        }
        check_free(&node)?;
        self.format(std::slice::from_ref(&node)).await?;
        self.launch(&node)?;
        self.wait_started(&[id], timeout).await
    }

    /// Adds a broker-only node (the next id) and waits until it is registered.
    ///
    /// The controller quorum keeps its static voters: a fourth voter would not
    /// survive more failures than three, and changing voters needs a dynamic quorum.
    pub async fn add_node(&self, timeout: Duration) -> Result<NodeSpec, ClusterError> {
        let node = {
            let mut state = self.lock_state();
            let id = state.nodes.iter().map(|n| n.id).max().unwrap_or(0) + 1;
            let taken: Vec<u16> = state
                .nodes
                .iter()
                .flat_map(|n| [Some(n.client_port), n.controller_port])
                .flatten()
                .collect();
            let highest = state.nodes.iter().map(|n| n.client_port).max().unwrap_or(0);
            let client_port = (highest.saturating_add(1)..u16::MAX)
                .find(|p| !taken.contains(p) && port_is_free(*p))
                .ok_or_else(|| ClusterError::PortInUse {
                    port: highest.saturating_add(1),
                    purpose: format!("client port of node {id}"),
                })?;
            let node = NodeSpec {
                id,
                client_port,
                controller_port: None,
                sasl_port: None,
            };
            state.nodes.push(node.clone());
            write_state(&self.dir, &state)?;
            node
        };
        self.format(std::slice::from_ref(&node)).await?;
        self.launch(&node)?;
        self.wait_started(&[node.id], timeout).await?;
        Ok(node)
    }
}
