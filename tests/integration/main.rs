//! Integration tests: one binary, so the suite links once.

mod chart;
mod common;
mod ecr_source;
mod fuzz_inputs;
mod generated;
mod image;
mod install;
mod install_scenario;
mod migration;
mod monitoring;
mod refresh_cli;
mod refresh_scenarios;
mod release;
mod serve_cli;
mod serve_faults;
mod serve_process;
mod serve_scenarios;
mod status_cli;
mod tenancy;
mod webhook_abuse;
mod webhook_config;
mod webhook_flow;
mod webhook_https;
mod webhook_router;
mod webhook_security;
