package dev.agentstream.connect;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.apache.avro.Schema;
import org.apache.avro.SchemaNormalization;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.kafka.connect.data.SchemaAndValue;
import org.apache.kafka.connect.errors.DataException;
import org.apache.kafka.connect.storage.Converter;

/**
 * Reads the journal's values: Avro single-object encoding (0xC3 0x01, the writer schema's 8-byte
 * little-endian CRC-64-AVRO fingerprint, the binary body), the writer schema found by fingerprint
 * among the .avsc files of the configured folders (schemas/ and schemas/history/), never from the
 * record itself. Each value becomes a Connect Struct with a schema (so the sink creates typed
 * tables) plus an {@code event_type} field naming the Avro record, for routing by type.
 *
 * <p>Read only: the platform writes the journal itself, so {@link #fromConnectData} refuses.
 */
public final class SingleObjectAvroConverter implements Converter {
  public static final String SCHEMA_DIRS = "schemas.dirs";
  /**
   * Fields that never leave the journal: the credentials a run carries. Comma-separated, bare
   * ({@code capability}) or by type ({@code ApprovalDecided.signature}); replaces the default.
   */
  public static final String DROP_FIELDS = "drop.fields";
  /**
   * Capability tokens and secret delegations (ToolCallAuthorized), approvals' HMACs, sealed
   * secrets, API key hashes (ApiKeyIssued, the gateway's verifier of a key) and a tool's transport
   * (ToolRegistered: a stdio server's env and args, a URL, any of which may hold a secret value).
   */
  public static final String DEFAULT_DROP_FIELDS = "capability,delegation,ApprovalDecided.signature,"
      + "SecretStored.wrapped_key,SecretStored.nonce,SecretStored.ciphertext,"
      + "ApiKeyIssued.key_hash,ToolRegistered.transport_json";
  static final byte[] MAGIC = {(byte) 0xC3, (byte) 0x01};
  private static final int HEADER = MAGIC.length + 8;

  private final Map<Long, Schema> writers = new HashMap<>();
  private final Map<Long, AvroToConnect.Mapped> mapped = new HashMap<>();
  private final DecoderFactory decoders = DecoderFactory.get();
  private Set<String> dropped = Set.of();

  @Override
  public void configure(Map<String, ?> configs, boolean isKey) {
    Object drop = configs.get(DROP_FIELDS);
    dropped = Arrays.stream((drop == null ? DEFAULT_DROP_FIELDS : drop.toString()).split(","))
        .map(String::trim).filter(f -> !f.isEmpty()).collect(Collectors.toUnmodifiableSet());
    Object dirs = configs.get(SCHEMA_DIRS);
    if (dirs == null || dirs.toString().isBlank()) {
      throw new DataException(SCHEMA_DIRS + " must name the folders of the journal's .avsc files");
    }
    for (String dir : dirs.toString().split(",")) {
      for (Path file : avscFiles(Path.of(dir.trim()))) {
        Schema schema = parse(file);
        writers.put(SchemaNormalization.parsingFingerprint64(schema), schema);
      }
    }
    if (writers.isEmpty()) {
      throw new DataException("no .avsc files in " + SCHEMA_DIRS + "=" + dirs);
    }
  }

  /** Every writer schema the converter can read, by fingerprint. */
  public Map<Long, Schema> writers() {
    return Map.copyOf(writers);
  }

  private static List<Path> avscFiles(Path dir) {
    try (Stream<Path> files = Files.list(dir)) {
      return files.filter(p -> p.toString().endsWith(".avsc")).sorted().toList();
    } catch (IOException e) {
      throw new DataException("cannot list the schema folder " + dir + ": " + e.getMessage(), e);
    }
  }

  private static Schema parse(Path file) {
    try {
      return new Schema.Parser().parse(file.toFile());
    } catch (IOException | RuntimeException e) {
      throw new DataException("cannot parse the Avro schema " + file + ": " + e.getMessage(), e);
    }
  }

  @Override
  public byte[] fromConnectData(String topic, org.apache.kafka.connect.data.Schema schema, Object value) {
    throw new DataException("SingleObjectAvroConverter only reads: the platform writes " + topic + " itself");
  }

  @Override
  public SchemaAndValue toConnectData(String topic, byte[] value) {
    if (value == null) {
      return SchemaAndValue.NULL; // a tombstone
    }
    if (value.length < HEADER || value[0] != MAGIC[0] || value[1] != MAGIC[1]) {
      throw new DataException(topic + ": not an Avro single-object encoded value (" + value.length + " bytes)");
    }
    long fingerprint = ByteBuffer.wrap(value, MAGIC.length, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
    Schema writer = writers.get(fingerprint);
    if (writer == null) {
      throw new DataException(String.format(
          "%s: unknown writer schema fingerprint %016x: no .avsc in %s has it", topic, fingerprint, SCHEMA_DIRS));
    }
    GenericRecord record;
    try {
      BinaryDecoder decoder = decoders.binaryDecoder(value, HEADER, value.length - HEADER, null);
      record = new GenericDatumReader<GenericRecord>(writer).read(null, decoder);
      if (!decoder.isEnd()) {
        throw new DataException(topic + ": " + writer.getName() + " has trailing bytes after its body");
      }
    } catch (IOException | RuntimeException e) {
      if (e instanceof DataException de) {
        throw de;
      }
      throw new DataException(topic + ": truncated or corrupt " + writer.getName() + " (" + e + ")", e);
    }
    AvroToConnect.Mapped m = mapped.computeIfAbsent(fingerprint, f -> AvroToConnect.map(writer, dropped));
    return new SchemaAndValue(m.schema(), m.struct(record));
  }
}
