//! The simulator benchmark: CPU and peak memory of large fleets at 1 Hz.

use super::report::SimulatorRun;
use super::worker::WorkerSpec;

use super::*;

impl Bench<'_> {
    pub(super) async fn simulator(&mut self) -> Result<Vec<SimulatorRun>, BenchError> {
        let mut runs = Vec::new();
        for &devices in &self.settings.simulator_devices {
            let command = self.worker_command(&WorkerSpec::Simulate {
                devices,
                seconds: self.settings.simulator_seconds,
            });
            let (measured, _) = self
                .measure(command, "the simulator", &format!("simulate-{devices}"))
                .await?;
            let outcome: worker::SimulateOutcome = parse_worker(&measured.stdout)?;
            let run = SimulatorRun {
                devices,
                readings: outcome.readings,
                seconds: outcome.elapsed_secs,
                cpu_secs: measured.cpu.as_secs_f64(),
                peak_rss_mib: measured.peak_rss_bytes as f64 / MIB,
            };
            (self.say)(&format!(
                "simulator, {devices} devices: {} readings in {:.1} s, {:.2} CPU s, peak RSS {:.1} MiB",
                run.readings, run.seconds, run.cpu_secs, run.peak_rss_mib
            ));
            runs.push(run);
        }
        Ok(runs)
    }
}
