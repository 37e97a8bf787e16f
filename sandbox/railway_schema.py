"""The slice of Railway's public GraphQL schema (backboard.railway.com/graphql/v2) the runbook
uses, as SDL. Names and shapes follow APIS.md; a query for anything else fails validation."""

from __future__ import annotations

from graphql import build_schema

SDL = """
scalar JSON
scalar EnvironmentConfig
scalar DateTime
enum DeploymentStatus { BUILDING CRASHED DEPLOYING FAILED INITIALIZING NEEDS_APPROVAL QUEUED
  REMOVED REMOVING SKIPPED SLEEPING SUCCESS WAITING }
type Deployment { id: String! status: DeploymentStatus! createdAt: DateTime! canRedeploy: Boolean!
  canRollback: Boolean! meta: JSON url: String staticUrl: String projectId: String!
  environmentId: String! serviceId: String! }
type DeploymentEdge { node: Deployment! cursor: String! }
type PageInfo { hasNextPage: Boolean! endCursor: String }
type DeploymentConnection { edges: [DeploymentEdge!]! pageInfo: PageInfo! }
input DeploymentStatusInput { in: [DeploymentStatus!] notIn: [DeploymentStatus!] }
input DeploymentListInput { projectId: String environmentId: String serviceId: String
  status: DeploymentStatusInput }
type ServiceInstance { id: String! serviceId: String! environmentId: String! numReplicas: Int
  region: String latestDeployment: Deployment }
type LogAttribute { key: String! value: String! }
type Log { timestamp: DateTime! message: String! severity: String attributes: [LogAttribute!]! }
type HttpLog { timestamp: DateTime! requestId: String! method: String! path: String!
  httpStatus: Int! totalDuration: Int! }
input VariableCollectionUpsertInput { projectId: String! environmentId: String! serviceId: String
  variables: JSON! replace: Boolean skipDeploys: Boolean }
input VariableUpsertInput { projectId: String! environmentId: String! serviceId: String
  name: String! value: String! skipDeploys: Boolean }
input ServiceInstanceUpdateInput { numReplicas: Int region: String }
input ServiceInstanceLimitsUpdateInput { environmentId: String! serviceId: String!
  vCPUs: Float memoryGB: Float }
type Query {
  deployments(input: DeploymentListInput!, first: Int, after: String): DeploymentConnection!
  deployment(id: String!): Deployment!
  serviceInstance(environmentId: String!, serviceId: String!): ServiceInstance!
  variables(projectId: String!, environmentId: String!, serviceId: String,
    unrendered: Boolean): JSON!
  deploymentLogs(deploymentId: String!, limit: Int, filter: String, startDate: DateTime,
    endDate: DateTime): [Log!]!
  httpLogs(deploymentId: String!, limit: Int, filter: String, startDate: DateTime,
    endDate: DateTime): [HttpLog!]!
}
type Mutation {
  deploymentRollback(id: String!): Boolean!
  deploymentRedeploy(id: String!, usePreviousImageTag: Boolean): Deployment!
  deploymentRestart(id: String!): Boolean!
  serviceInstanceDeployV2(environmentId: String!, serviceId: String!, commitSha: String): String!
  variableCollectionUpsert(input: VariableCollectionUpsertInput!): Boolean!
  variableUpsert(input: VariableUpsertInput!): Boolean!
  environmentPatchCommit(environmentId: String!, patch: EnvironmentConfig,
    commitMessage: String): String!
  serviceInstanceUpdate(serviceId: String!, environmentId: String,
    input: ServiceInstanceUpdateInput!): Boolean!
  serviceInstanceLimitsUpdate(input: ServiceInstanceLimitsUpdateInput!): Boolean!
}
"""
SCHEMA = build_schema(SDL)
