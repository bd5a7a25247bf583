//! The gRPC services: [`peer::PeerService`] answers other nodes, [`admin::AdminService`]
//! answers this node's operator. Both sit behind the same mutual-TLS listener; each
//! handler takes the caller's node id from its verified certificate.

pub mod admin;
pub mod contracts;
pub mod peer;

use std::pin::Pin;

use tokio_stream::Stream;
use tonic::transport::Channel;

use crate::proto::admin_client::AdminClient;
use crate::proto::node_client::NodeClient;
use crate::transport::MAX_MESSAGE_BYTES;

/// A boxed response stream.
pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send>>;

/// A client for a peer's node service, with the node's message-size limits.
pub fn peer_client(channel: Channel) -> NodeClient<Channel> {
    NodeClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// A client for a node's admin service (the CLI uses it).
pub fn admin_client(channel: Channel) -> AdminClient<Channel> {
    AdminClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}
