package dev.agentstream.connect;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Map;
import java.util.stream.Stream;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.message.BinaryMessageEncoder;
import org.apache.kafka.connect.data.SchemaAndValue;
import org.apache.kafka.connect.data.Struct;
import org.apache.kafka.connect.errors.DataException;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

class SingleObjectAvroConverterTest {
  static final Path SCHEMAS = Path.of(System.getProperty("schemas.dir", "../schemas"));
  SingleObjectAvroConverter converter;

  @BeforeEach
  void configure() {
    converter = new SingleObjectAvroConverter();
    converter.configure(Map.of(SingleObjectAvroConverter.SCHEMA_DIRS, SCHEMAS + "," + SCHEMAS.resolve("history")), false);
  }

  static Schema load(String file) throws IOException {
    return new Schema.Parser().parse(SCHEMAS.resolve(file).toFile());
  }

  // Avro's own single-object encoder: an implementation independent of the converter's reader.
  static byte[] encode(GenericRecord record) throws IOException {
    ByteBuffer buf = new BinaryMessageEncoder<GenericRecord>(GenericData.get(), record.getSchema()).encode(record);
    byte[] out = new byte[buf.remaining()];
    buf.get(out);
    return out;
  }

  static long count(Path dir) throws IOException {
    try (Stream<Path> files = Files.list(dir)) {
      return files.filter(p -> p.toString().endsWith(".avsc")).count();
    }
  }

  @Test
  void readsEveryCurrentAndHistoricalSchema() throws IOException {
    assertEquals(count(SCHEMAS) + count(SCHEMAS.resolve("history")), converter.writers().size());
  }

  @Test
  void aJournalEventBecomesATypedStructNamedByItsType() throws IOException {
    Schema schema = load("ToolCallCompleted.avsc");
    GenericRecord r = new GenericData.Record(schema);
    r.put("event_id", "e1");
    r.put("run_id", "run-1");
    r.put("tenant_id", "acme");
    r.put("step", 3);
    r.put("call_id", "c1");
    r.put("tool", "git_status");
    r.put("idempotency_key", "k1");
    r.put("content", "clean");
    r.put("is_error", false);
    r.put("duration_ms", 12.5);
    r.put("result_blob", "");
    SchemaAndValue out = converter.toConnectData("agentstream.runs.journal", encode(r));
    Struct s = (Struct) out.value();
    assertEquals("ToolCallCompleted", s.getString("event_type"));
    assertEquals("acme", s.getString("tenant_id"));
    assertEquals(3, s.getInt32("step"));
    assertEquals(12.5, s.getFloat64("duration_ms"));
    assertEquals(false, s.getBoolean("is_error"));
    assertEquals(schema.getFields().size() + 1, out.schema().fields().size());
    assertEquals(org.apache.kafka.connect.data.Schema.Type.INT32, out.schema().field("step").schema().type());
  }

  @Test
  void readsWhatThePythonCodecWrites() throws IOException {
    // Written by agentstream.codec.AvroCodec (fastavro): the journal's real bytes, not Avro Java's.
    byte[] journal = getClass().getResourceAsStream("/ToolCallCompleted.python.bin").readAllBytes();
    Struct s = (Struct) converter.toConnectData("agentstream.runs.journal", journal).value();
    assertEquals("ToolCallCompleted", s.getString("event_type"));
    assertEquals("git_status", s.getString("tool"));
    assertEquals(12.5, s.getFloat64("duration_ms"));
    // Written before result_blob existed (v2): its writer schema is the history copy.
    Schema schema = load("history/ToolCallCompleted.v1.avsc");
    GenericRecord r = new GenericData.Record(schema);
    for (Schema.Field f : schema.getFields()) {
      r.put(f.name(), s.get(f.name()));
    }
    assertArrayEquals(journal, encode(r)); // the same header and body as Avro Java's encoder
  }

  @Test
  void aNullableFieldIsOptionalAndNullReadsAsNull() throws IOException {
    Schema schema = load("LlmCallFailed.avsc");
    GenericRecord r = new GenericData.Record(schema);
    for (Schema.Field f : schema.getFields()) {
      r.put(f.name(), dummy(f.schema()));
    }
    SchemaAndValue out = converter.toConnectData("t", encode(r));
    Schema.Field nullable = schema.getFields().stream()
        .filter(f -> f.schema().getType() == Schema.Type.UNION).findFirst().orElseThrow();
    assertTrue(out.schema().field(nullable.name()).schema().isOptional());
    assertNull(((Struct) out.value()).get(nullable.name()));
  }

  @Test
  void aHistoricalWriterSchemaStillReads() throws IOException {
    Path file = SCHEMAS.resolve("history").resolve("LlmCallRequested.v1.avsc");
    Schema schema = new Schema.Parser().parse(file.toFile());
    GenericRecord r = new GenericData.Record(schema);
    for (Schema.Field f : schema.getFields()) {
      r.put(f.name(), dummy(f.schema()));
    }
    Struct s = (Struct) converter.toConnectData("t", encode(r)).value();
    assertEquals("LlmCallRequested", s.getString("event_type"));
  }

  @Test
  void anUnknownSchemaIsAClearError() throws IOException {
    Schema other = new Schema.Parser().parse(
        "{\"type\":\"record\",\"name\":\"Stranger\",\"fields\":[{\"name\":\"x\",\"type\":\"string\"}]}");
    GenericRecord r = new GenericData.Record(other);
    r.put("x", "y");
    DataException e = assertThrows(DataException.class, () -> converter.toConnectData("t", encode(r)));
    assertTrue(e.getMessage().contains("unknown writer schema fingerprint"), e.getMessage());
  }

  @Test
  void aTruncatedRecordIsAClearError() throws IOException {
    GenericRecord r = new GenericData.Record(load("RunCancelled.avsc"));
    for (Schema.Field f : r.getSchema().getFields()) {
      r.put(f.name(), dummy(f.schema()));
    }
    byte[] whole = encode(r);
    byte[] cut = Arrays.copyOf(whole, whole.length - 3);
    DataException e = assertThrows(DataException.class, () -> converter.toConnectData("t", cut));
    assertTrue(e.getMessage().contains("truncated or corrupt RunCancelled"), e.getMessage());
    byte[] header = Arrays.copyOf(whole, 4);
    assertThrows(DataException.class, () -> converter.toConnectData("t", header));
    byte[] longer = Arrays.copyOf(whole, whole.length + 2);
    assertThrows(DataException.class, () -> converter.toConnectData("t", longer));
  }

  @Test
  void plainBytesTombstonesAndWritesAreHandled() {
    assertThrows(DataException.class, () -> converter.toConnectData("t", "{\"json\":1}".getBytes()));
    assertSame(SchemaAndValue.NULL, converter.toConnectData("t", null));
    assertThrows(DataException.class, () -> converter.fromConnectData("t", null, null));
    assertThrows(DataException.class, () -> new SingleObjectAvroConverter().configure(Map.of(), false));
  }

  static Object dummy(Schema s) {
    switch (s.getType()) {
      case STRING: return "v";
      case INT: return 1;
      case LONG: return 2L;
      case DOUBLE: return 0.5;
      case FLOAT: return 0.25f;
      case BOOLEAN: return true;
      case BYTES: return ByteBuffer.wrap(new byte[] {1, 2});
      case UNION: return null;
      case ENUM: return new GenericData.EnumSymbol(s, s.getEnumSymbols().get(0));
      case ARRAY: return java.util.List.of();
      case MAP: return Map.of();
      default: throw new IllegalArgumentException("no dummy for " + s);
    }
  }

  static GenericRecord filled(String file) throws IOException {
    GenericRecord r = new GenericData.Record(load(file));
    for (Schema.Field f : r.getSchema().getFields()) {
      r.put(f.name(), dummy(f.schema()));
    }
    return r;
  }

  @Test
  void credentialsNeverLeaveTheConverter() throws IOException {
    GenericRecord authorized = filled("ToolCallAuthorized.avsc");
    authorized.put("capability", "cap-token-SECRET");
    authorized.put("delegation", "delegation-SECRET");
    SchemaAndValue out = converter.toConnectData("t", encode(authorized));
    assertNull(out.schema().field("capability"));
    assertNull(out.schema().field("delegation"));
    assertEquals("v", ((Struct) out.value()).getString("tool"));
    assertTrue(!out.value().toString().contains("SECRET"), out.value().toString());
    // By type: an approval's HMAC is dropped, a loop's call signature (a hash of the call) is kept.
    assertNull(converter.toConnectData("t", encode(filled("ApprovalDecided.avsc"))).schema().field("signature"));
    SchemaAndValue loop = converter.toConnectData("t", encode(filled("LoopDetected.avsc")));
    assertEquals("v", ((Struct) loop.value()).getString("signature"));
  }

  @Test
  void theDroppedFieldsAreConfigurable() throws IOException {
    SingleObjectAvroConverter keepAll = new SingleObjectAvroConverter();
    keepAll.configure(Map.of(SingleObjectAvroConverter.SCHEMA_DIRS, SCHEMAS.toString(),
        SingleObjectAvroConverter.DROP_FIELDS, " ToolCallAuthorized.tool , "), false);
    SchemaAndValue out = keepAll.toConnectData("t", encode(filled("ToolCallAuthorized.avsc")));
    assertEquals("v", ((Struct) out.value()).getString("capability"));
    assertNull(out.schema().field("tool"));
  }

  // The registry sink's configuration (agentstream/connect/registry.py): tenants, tools.catalog, control.
  static SingleObjectAvroConverter registry() {
    SingleObjectAvroConverter c = new SingleObjectAvroConverter();
    c.configure(Map.of(SingleObjectAvroConverter.SCHEMA_DIRS, SCHEMAS + "," + SCHEMAS.resolve("history"),
        SingleObjectAvroConverter.DROP_FIELDS, "key_hash,transport_json"), false);
    return c;
  }

  static GenericRecord filledHistory(String file) throws IOException {
    GenericRecord r = new GenericData.Record(new Schema.Parser().parse(SCHEMAS.resolve("history").resolve(file).toFile()));
    for (Schema.Field f : r.getSchema().getFields()) {
      r.put(f.name(), dummy(f.schema()));
    }
    return r;
  }

  @Test
  void keyHashesAndToolTransportsNeverLeaveTheConverterInAnyVersion() throws IOException {
    for (SingleObjectAvroConverter c : new SingleObjectAvroConverter[] {registry(), converter}) {
      for (GenericRecord issued : new GenericRecord[] {filled("ApiKeyIssued.avsc"), filledHistory("ApiKeyIssued.v1.avsc")}) {
        issued.put("key_hash", "9f86d081884c7d659a2feaa0c55ad015-SECRET");
        SchemaAndValue out = c.toConnectData("acme.tenants", encode(issued));
        assertNull(out.schema().field("key_hash"));
        assertEquals("ApiKeyIssued", ((Struct) out.value()).getString("event_type"));
        assertEquals("v", ((Struct) out.value()).getString("tenant_id"));
        assertTrue(!out.value().toString().contains("SECRET"), out.value().toString());
      }
      for (GenericRecord tool : new GenericRecord[] {filled("ToolRegistered.avsc"), filledHistory("ToolRegistered.v2.avsc")}) {
        tool.put("transport_json", "{\"kind\":\"stdio\",\"env\":{\"API_TOKEN\":\"tok-SECRET\"}}");
        tool.put("secrets", java.util.List.of("crm_token"));
        SchemaAndValue out = c.toConnectData("acme.tools.catalog", encode(tool));
        assertNull(out.schema().field("transport_json"));
        // A tenant secret's NAME is kept (its value is sealed on the secrets topic); where it runs too.
        assertEquals(java.util.List.of("crm_token"), ((Struct) out.value()).getArray("secrets"));
        assertEquals("v", ((Struct) out.value()).getString("source"));
        assertTrue(!out.value().toString().contains("SECRET"), out.value().toString());
      }
    }
  }

  @Test
  void theRegistryTopicsReadWholeAndTheirTombstonesAreNull() throws IOException {
    SingleObjectAvroConverter c = registry();
    for (String file : new String[] {"TenantUpserted.avsc", "ApiKeyRevoked.avsc", "ToolSwitched.avsc",
        "KillSwitchSet.avsc", "TenantPolicySet.avsc", "TenantBudgetSet.avsc"}) {
      GenericRecord r = filled(file);
      SchemaAndValue out = c.toConnectData("acme.control", encode(r));
      assertEquals(r.getSchema().getFields().size() + 1, out.schema().fields().size(), file);
      assertEquals(r.getSchema().getName(), ((Struct) out.value()).getString("event_type"));
    }
    // A compacted topic's deletion: no schema, no value, no error (the sink writes no row for it).
    SchemaAndValue tombstone = c.toConnectData("acme.tenants", null);
    assertNull(tombstone.schema());
    assertNull(tombstone.value());
  }

  @Test
  void bytesSurviveAsBytes() {
    Object v = AvroToConnect.value(org.apache.kafka.connect.data.Schema.BYTES_SCHEMA, ByteBuffer.wrap(new byte[] {7, 8}));
    assertArrayEquals(new byte[] {7, 8}, (byte[]) v);
  }
}
