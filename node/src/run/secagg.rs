//! Secure aggregation among nodes: placeholder until wired.

use std::sync::Arc;

use tonic::{Response, Status, Streaming};
use xmcredit_crypto::NodeId;

use crate::context::NodeContext;
use crate::proto;
use crate::service::admin::ProgressSender;
use crate::service::ResponseStream;
use crate::NodeError;

pub async fn run_coordinator(
    _ctx: Arc<NodeContext>,
    contract_id: &str,
    _progress: ProgressSender,
) -> Result<serde_json::Value, NodeError> {
    Err(NodeError::Refused(format!("secagg is not wired yet ({contract_id})")))
}

pub async fn serve_session(
    _ctx: Arc<NodeContext>,
    _peer: NodeId,
    _incoming: Streaming<proto::Frame>,
) -> Result<Response<ResponseStream<proto::Frame>>, Status> {
    Err(Status::unimplemented("secagg is not wired yet"))
}
