//! THE RULE TABLE: what Amazon DocumentDB 5.0 (instance-based clusters) supports. Everything the
//! guard refuses, and everything `doctor` says a DocumentDB target will not carry, is decided
//! from the lists in this file; the checks in `check/` only walk commands. A newer DocumentDB
//! version is one edit here: flip the `bool` column (it is the "5.0" column of AWS's tables) and
//! the notes below, then regenerate docs/operations.md's table (`summary.rs`).
//!
//! Source, read 2026-12-06 (through stored copies of the pages):
//! - "Supported MongoDB APIs, operations, and data types in Amazon DocumentDB",
//!   <https://docs.aws.amazon.com/documentdb/latest/developerguide/mongo-apis.html> (tables:
//!   commands, query/projection/update operators, geospatial, cursor methods, aggregation
//!   stages and operators, data types, indexes and index properties). AWS: "commands and
//!   operators that are internal-only or not applicable to a fully-managed service are not
//!   supported and are not included": so anything not listed here as `true` is refused.
//! - "Functional differences: Amazon DocumentDB and MongoDB",
//!   <https://docs.aws.amazon.com/documentdb/latest/developerguide/functional-differences.html>
//!   (retryable writes, admin/local databases, `$natural` reverse scans, `$elemMatch` in
//!   `$all`, `$`-prefixed fields in `$in`/`$nin`/`$all`, `$lookup` correlated subqueries,
//!   `allowDiskUse` on find).
//! - "Using change streams with Amazon DocumentDB", `…/change_streams.html` (supported stages,
//!   `resumeAfter` / `startAtOperationTime`, full document lookup only).
//! - "Transactions in Amazon DocumentDB", `…/transactions.html` (no collection creation and no
//!   cursors in a transaction, unsupported stages, no causal consistency: 303).
//! - "Using JSON schema validation", `…/json-schema-validation.html` (validator, levels,
//!   actions, `$jsonSchema` keywords); "Partial index", `…/partial-index.html` (operators).
//! - Error codes not printed by AWS, as DocumentDB replied in public issue threads: 304
//!   "Aggregation stage not supported: '$facet'" (github.com/payloadcms/payload/issues/2092,
//!   huggingface/chat-ui/issues/268), "Aggregation project operator not supported: '…'"
//!   (payloadcms/payload/issues/1869), 303 "option collation is currently not supported."
//!   (theopenconversationkit/tock/issues/1208), 9 "$lookup concise correlated subquery is not
//!   supported" (BeanieODM/beanie/pull/1042).
//!
//! Assumptions (not in the pages above), each marked `ASSUMED` where it is used:
//! - Unknown commands answer 59 CommandNotFound, as MongoDB does.
//! - Field names: the 3.6-era functional differences said "Amazon DocumentDB does not support
//!   dots '.' in a document field name"; today's page no longer restates it and only limits
//!   querying `$`-prefixed fields. Stored field names with a dot or a leading `$` are refused
//!   (MongoDB writes them only since 5.0, through `$setField`/`$literal`, which DocumentDB 5.0
//!   lacks). Code 2 BadValue with MongoDB 4.x's message.
//! - Pipeline-style updates (`u: [...]`) are not in the tables: accepted with the stages the
//!   5.0 column allows (`$addFields`, `$project`, `$replaceRoot`).
//! - `$changeStream` options DocumentDB lacks answer 9 "Unrecognized field" like `txnNumber`.
//! - The `let` option (MongoDB 5.0 API, absent from the tables) is refused.

/// A list of names and whether DocumentDB 5.0 supports each (AWS's "5.0" column).
pub type Table = &'static [(&'static str, bool)];

/// Whether `name` is listed as supported (unlisted names are not).
pub fn supported(table: Table, name: &str) -> bool {
    table.iter().any(|(n, yes)| *n == name && *yes)
}

/// Database commands (administrative, aggregation, authentication, diagnostic, query and
/// write, role and user management, sessions, sharding).
#[rustfmt::skip]
pub const COMMANDS: Table = &[
    // Administrative
    ("cloneCollectionAsCapped", false), ("collMod", true), ("convertToCapped", false), ("copydb", false),
    ("create", true), ("createView", false), ("createIndexes", true), ("currentOp", true), ("drop", true),
    ("dropDatabase", true), ("dropIndexes", true), ("filemd5", false), ("getAuditConfig", true),
    ("killCursors", true), ("killOp", true), ("listCollections", true), ("listDatabases", true),
    ("listIndexes", true), ("reIndex", true), ("renameCollection", true), ("setAuditConfig", true),
    // Aggregation
    ("aggregate", true), ("count", true), ("distinct", true), ("mapReduce", false),
    // Authentication
    ("authenticate", true), ("logout", true),
    // Diagnostic
    ("buildInfo", true), ("collStats", true), ("connPoolStats", false), ("connectionStatus", true),
    ("dataSize", true), ("dbHash", false), ("dbStats", true), ("explain", true), ("features", false),
    ("hostInfo", true), ("listCommands", true), ("profile", true), ("serverStatus", true), ("top", true),
    // Query and write operations
    ("delete", true), ("find", true), ("findAndModify", true), ("getLastError", false), ("getMore", true),
    ("getPrevError", false), ("insert", true), ("parallelCollectionScan", false), ("resetError", false),
    ("update", true),
    // Role management
    ("createRole", true), ("dropAllRolesFromDatabase", true), ("dropRole", true), ("grantRolesToRole", true),
    ("revokeRolesFromRole", true), ("revokePrivilegesFromRole", true), ("rolesInfo", true), ("updateRole", true),
    // Sessions. endSessions: mongo-apis.html says No, transactions.html ("Supported commands")
    // says Yes; every driver sends it when it closes, DocumentDB has sessions since 4.0: Yes.
    ("abortTransaction", true), ("commitTransaction", true), ("endSessions", true), ("killAllSessions", true),
    ("killAllSessionsByPattern", false), ("killSessions", true), ("refreshSessions", false), ("startSession", true),
    // User management
    ("createUser", true), ("dropAllUsersFromDatabase", true), ("dropUser", true), ("grantRolesToUser", true),
    ("revokeRolesFromUser", true), ("updateUser", true), ("usersInfo", true),
    // Sharding: only elastic clusters list enableSharding / shardCollection; none on instance clusters
    ("enableSharding", false), ("shardCollection", false), ("addShard", false), ("balancerStart", false),
    ("balancerStatus", false), ("balancerStop", false), ("listShards", false), ("moveChunk", false),
    ("movePrimary", false), ("split", false), ("splitVector", false), ("reshardCollection", false),
    // Not in the tables, needed by every supported driver (ASSUMED supported): the handshake,
    // authentication and liveness; and DocumentDB's own commands (change_streams.html,
    // release notes), which mongod does not know.
    ("hello", true), ("isMaster", true), ("ismaster", true), ("ping", true), ("saslStart", true),
    ("saslContinue", true), ("buildinfo", true), ("modifyChangeStreams", true), ("getEngineVersion", true),
];

/// Aggregation stages.
#[rustfmt::skip]
pub const STAGES: Table = &[
    ("$addFields", true), ("$bucket", false), ("$bucketAuto", false), ("$changeStream", true),
    ("$collStats", true), ("$count", true), ("$currentOp", true), ("$facet", false), ("$geoNear", true),
    ("$graphLookup", false), ("$group", true), ("$indexStats", true), ("$limit", true),
    ("$listLocalSessions", false), ("$listSessions", false), ("$lookup", true), ("$match", true),
    ("$merge", false), ("$out", true), ("$planCacheStats", false), ("$project", true), ("$redact", true),
    ("$replaceRoot", true), ("$sample", true), ("$set", false), ("$setWindowFields", false), ("$skip", true),
    ("$sort", true), ("$sortByCount", false), ("$unionWith", false), ("$unset", false), ("$unwind", true),
    ("$replaceWith", false), ("$vectorSearch", false), ("$search", true),
    // DocumentDB's own (change_streams.html)
    ("$listChangeStreams", true),
];

/// The stages a `$changeStream` pipeline may hold after `$changeStream` (change_streams.html:
/// "`$match`, `$project`, `$redact`, and `$addFields` and `$replaceRoot`").
pub const CHANGE_STREAM_STAGES: &[&str] = &["$match", "$project", "$redact", "$addFields", "$replaceRoot"];

/// `$changeStream` options: DocumentDB resumes from `resumeAfter` or `startAtOperationTime`
/// and looks full documents up (`updateLookup`); it has no pre/post images, no `startAfter`,
/// no expanded events (change_streams.html).
#[rustfmt::skip]
pub const CHANGE_STREAM_OPTIONS: Table = &[
    ("resumeAfter", true), ("startAtOperationTime", true), ("fullDocument", true), ("allChangesForCluster", true),
    ("startAfter", false), ("fullDocumentBeforeChange", false), ("showExpandedEvents", false),
];

/// `fullDocument` values: "Full document lookup for updates" only (no post-images).
pub const FULL_DOCUMENT_VALUES: &[&str] = &["default", "updateLookup"];

/// Stages MongoDB accepts in a pipeline-style update, less those DocumentDB 5.0 lacks
/// (ASSUMED: pipeline updates are not in the tables).
pub const UPDATE_PIPELINE_STAGES: &[&str] = &["$addFields", "$project", "$replaceRoot"];

/// Stages a transaction may not hold (transactions.html, "Unsupported capabilities").
pub const STAGES_NOT_IN_TRANSACTIONS: &[&str] = &["$collStats", "$currentOp", "$indexStats", "$listSessions", "$out"];

/// Aggregation expression operators and accumulators.
#[rustfmt::skip]
pub const EXPRESSIONS: Table = &[
    // Accumulators
    ("$accumulator", false), ("$addToSet", true), ("$avg", true), ("$count", false), ("$covariancePop", false),
    ("$covarianceSamp", false), ("$denseRank", false), ("$derivative", false), ("$documentNumber", false),
    ("$expMovingAvg", false), ("$first", true), ("$integral", false), ("$last", true), ("$max", true),
    ("$min", true), ("$push", true), ("$rank", false), ("$shift", false), ("$stdDevPop", false),
    ("$stdDevSamp", false), ("$sum", true),
    // Arithmetic
    ("$abs", true), ("$add", true), ("$ceil", true), ("$divide", true), ("$exp", true), ("$floor", true),
    ("$ln", true), ("$log", true), ("$log10", true), ("$mod", true), ("$multiply", true), ("$pow", false),
    ("$round", false), ("$sqrt", true), ("$subtract", true), ("$trunc", false),
    // Array
    ("$arrayElemAt", true), ("$arrayToObject", true), ("$concatArrays", true), ("$filter", true),
    ("$in", true), ("$indexOfArray", true), ("$isArray", true), ("$objectToArray", true), ("$range", true),
    ("$reverseArray", true), ("$reduce", true), ("$size", true), ("$slice", true), ("$zip", true),
    // Boolean, comparison, conditional, data type, data size
    ("$and", true), ("$not", true), ("$or", true), ("$cmp", true), ("$eq", true), ("$gt", true), ("$gte", true),
    ("$lt", true), ("$lte", true), ("$ne", true), ("$cond", true), ("$ifNull", true), ("$switch", true),
    ("$type", true), ("$binarySize", false), ("$bsonSize", false),
    // Date
    ("$dateAdd", true), ("$dateDiff", true), ("$dateFromParts", false), ("$dateFromString", true),
    ("$dateSubtract", true), ("$dateToParts", false), ("$dateToString", true), ("$dateTrunc", false),
    ("$dayOfMonth", true), ("$dayOfWeek", true), ("$dayOfYear", true), ("$hour", true), ("$isoDayOfWeek", true),
    ("$isoWeek", true), ("$isoWeekYear", true), ("$millisecond", true), ("$minute", true), ("$month", true),
    ("$second", true), ("$week", true), ("$year", true),
    // Literal, merge, set
    ("$literal", true), ("$mergeObjects", true), ("$allElementsTrue", true), ("$anyElementTrue", true),
    ("$setDifference", true), ("$setEquals", true), ("$setIntersection", true), ("$setIsSubset", true),
    ("$setUnion", true),
    // String
    ("$concat", true), ("$indexOfBytes", true), ("$indexOfCP", true), ("$ltrim", true), ("$regexFind", true),
    ("$regexFindAll", true), ("$regexMatch", true), ("$replaceAll", true), ("$replaceOne", true),
    ("$rtrim", true), ("$split", true), ("$strcasecmp", true), ("$strLenBytes", true), ("$strLenCP", true),
    ("$substr", true), ("$substrBytes", true), ("$substrCP", true), ("$toLower", true), ("$toUpper", true),
    ("$trim", true),
    // Text search, type conversion, variables, miscellaneous
    ("$meta", true), ("$convert", true), ("$isNumber", false), ("$toBool", true), ("$toDate", true),
    ("$toDecimal", true), ("$toDouble", true), ("$toInt", true), ("$toLong", true), ("$toObjectId", true),
    ("$toString", true), ("$let", true), ("$map", true), ("$getField", false), ("$rand", false),
    ("$sampleRate", false),
];

/// System variables (`$$NAME`); user variables (`$$this`, `$$value`, `$let` names) are lowercase.
#[rustfmt::skip]
pub const SYSTEM_VARIABLES: Table =
    &[("CURRENT", false), ("DESCEND", true), ("KEEP", true), ("PRUNE", true), ("REMOVE", false), ("ROOT", true)];

/// Query operators (array, bitwise, comment, comparison, element, evaluation, logical,
/// geospatial), with the companions some of them take.
#[rustfmt::skip]
pub const QUERY_OPERATORS: Table = &[
    ("$all", true), ("$elemMatch", true), ("$size", true), ("$bitsAllSet", true), ("$bitsAnySet", true),
    ("$bitsAllClear", true), ("$bitsAnyClear", true), ("$comment", true), ("$eq", true), ("$gt", true),
    ("$gte", true), ("$in", true), ("$lt", true), ("$lte", true), ("$ne", true), ("$nin", true),
    ("$exists", true), ("$type", true), ("$expr", true), ("$jsonSchema", true), ("$mod", true), ("$regex", true),
    ("$options", true), ("$text", true), ("$where", false), ("$and", true), ("$nor", true), ("$not", true),
    ("$or", true),
    // Geospatial query selectors and geometry specifiers
    ("$geoIntersects", true), ("$geoWithin", true), ("$near", true), ("$nearSphere", true), ("$geometry", true),
    ("$maxDistance", true), ("$minDistance", true), ("$box", false), ("$center", false), ("$centerSphere", false),
    ("$polygon", false), ("$uniqueDocs", false),
];

/// Projection operators.
pub const PROJECTION_OPERATORS: Table = &[("$elemMatch", true), ("$meta", true), ("$slice", true)];

/// Update operators and the modifiers of `$push` / `$addToSet`.
#[rustfmt::skip]
pub const UPDATE_OPERATORS: Table = &[
    ("$addToSet", true), ("$pop", true), ("$pullAll", true), ("$pull", true), ("$push", true), ("$bit", true),
    ("$currentDate", true), ("$inc", true), ("$max", true), ("$min", true), ("$mul", true), ("$rename", true),
    ("$set", true), ("$setOnInsert", true), ("$unset", true),
];
pub const UPDATE_MODIFIERS: Table = &[("$each", true), ("$position", true), ("$slice", true), ("$sort", true)];

/// BSON types DocumentDB cannot store ("Data types": DBPointer, DBRefs, JavaScript, JavaScript
/// with scope, Symbol, Undefined: No). DBRefs are `$ref`/`$id` fields: refused as `$` names.
pub const UNSUPPORTED_TYPES: &[&str] = &["DBPointer", "JavaScript", "JavaScript (with scope)", "Symbol", "Undefined"];

/// Index kinds, by the value in an index key (`1`/`-1` are single field / compound / multikey).
#[rustfmt::skip]
pub const INDEX_KINDS: Table =
    &[("2dsphere", true), ("2d", false), ("hashed", false), ("text", true), ("geoHaystack", false)];
/// Wildcard indexes (`$**` keys): No.
pub const WILDCARD_INDEXES: bool = false;

/// Fields of an index specification (`createIndexes.indexes[]`): index properties and the
/// options the supported kinds take. Case-insensitive (collation) and hidden indexes: No.
#[rustfmt::skip]
pub const INDEX_OPTIONS: Table = &[
    ("key", true), ("name", true), ("v", true), ("ns", true), ("background", true), ("unique", true),
    ("sparse", true), ("expireAfterSeconds", true), ("partialFilterExpression", true), ("weights", true),
    ("default_language", true), ("language_override", true), ("textIndexVersion", true),
    ("2dsphereIndexVersion", true), ("vectorOptions", true), ("collation", false), ("hidden", false),
    ("wildcardProjection", false), ("bits", false), ("min", false), ("max", false), ("bucketSize", false),
    ("storageEngine", false), ("prepareUnique", false), ("clustered", false),
];

/// Operators a `partialFilterExpression` may use (partial-index.html; `$and` only at the top).
pub const PARTIAL_FILTER_OPERATORS: &[&str] = &["$eq", "$exists", "$and", "$gt", "$gte", "$lt", "$lte"];

/// Collection options of `create` beyond the command's own fields. Capped collections, views
/// (createView), time series, clustered collections, collations, pre/post images: No.
#[rustfmt::skip]
pub const COLLECTION_OPTIONS: Table = &[
    ("validator", true), ("validationLevel", true), ("validationAction", true), ("capped", false), ("size", false),
    ("max", false), ("autoIndexId", false), ("storageEngine", false), ("indexOptionDefaults", false),
    ("viewOn", false), ("pipeline", false), ("collation", false), ("timeseries", false),
    ("expireAfterSeconds", false), ("clusteredIndex", false), ("changeStreamPreAndPostImages", false),
    ("encryptedFields", false), ("idIndex", false),
];

/// What `collMod` may change: "collMod: Partial", "collMod: expireAfterSeconds: Yes" (through
/// `index`), and the validation settings (json-schema-validation.html).
pub const COLL_MOD_OPTIONS: &[&str] = &["index", "validator", "validationLevel", "validationAction"];
/// What `collMod.index` may change: the TTL only.
pub const COLL_MOD_INDEX_OPTIONS: &[&str] = &["keyPattern", "name", "expireAfterSeconds"];

/// Validation settings (json-schema-validation.html, "Supported keywords").
pub const VALIDATION_LEVELS: &[&str] = &["off", "strict", "moderate"];
pub const VALIDATION_ACTIONS: &[&str] = &["error"];
/// `$jsonSchema` keywords DocumentDB understands.
#[rustfmt::skip]
pub const JSON_SCHEMA_KEYWORDS: &[&str] = &[
    "additionalItems", "additionalProperties", "allOf", "anyOf", "bsonType", "dependencies", "description",
    "enum", "exclusiveMaximum", "exclusiveMinimum", "items", "maximum", "minimum", "maxItems", "minItems",
    "maxLength", "minLength", "maxProperties", "minProperties", "multipleOf", "not", "oneOf", "pattern",
    "patternProperties", "properties", "required", "title", "type", "uniqueItems",
];

/// Options refused on every command that reads or writes documents: collations (cursor
/// `collation()`: No; case-insensitive indexes: No) and `let` (ASSUMED).
pub const REFUSED_OPTIONS: &[&str] = &["collation", "let"];
/// `find` options DocumentDB lacks: cursor `max()`, `min()`, `noCursorTimeout()`,
/// `returnKey()`, `showRecordId()`, `tailable()`: No; `allowDiskUse` "is currently not
/// supported for the find command" (functional differences).
#[rustfmt::skip]
pub const REFUSED_FIND_OPTIONS: &[&str] =
    &["max", "min", "noCursorTimeout", "returnKey", "showRecordId", "tailable", "awaitData", "allowDiskUse"];

/// Read concerns: no `linearizable` (transactions.html); no `afterClusterTime`, which is
/// causal consistency (transactions.html: 303 "Feature not supported: 'causal consistency'").
pub const REFUSED_READ_CONCERN_LEVELS: &[&str] = &["linearizable"];

/// Databases that hold no user data on DocumentDB ("does not support the admin or local
/// database nor MongoDB system.* or startup_log collections"), `config` with them.
pub const SYSTEM_DATABASES: &[&str] = &["admin", "local", "config"];
