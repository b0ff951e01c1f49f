package dev.agentstream.connect;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.kafka.connect.data.Schema;
import org.apache.kafka.connect.data.SchemaBuilder;
import org.apache.kafka.connect.data.Struct;
import org.apache.kafka.connect.errors.DataException;

/** An Avro writer schema as a Connect schema, and its records as Structs (no registry involved). */
final class AvroToConnect {
  static final String EVENT_TYPE = "event_type";

  private AvroToConnect() {}

  /** A top-level event: its own fields ({@code inner}) plus {@code event_type}, the record's name. */
  record Mapped(String eventType, Schema inner, Schema schema) {
    Struct struct(GenericRecord record) {
      Struct fields = (Struct) value(inner, record);
      Struct typed = new Struct(schema);
      for (var field : inner.fields()) {
        if (schema.field(field.name()) != null) { // a dropped field is decoded, never copied
          typed.put(field.name(), fields.get(field));
        }
      }
      return typed.put(EVENT_TYPE, eventType);
    }
  }

  /**
   * The event's Connect schema without its {@code dropped} top-level fields: each named either
   * bare ({@code capability}: in every event type) or by type ({@code ApprovalDecided.signature}).
   */
  static Mapped map(org.apache.avro.Schema avro, Set<String> dropped) {
    if (avro.getType() != org.apache.avro.Schema.Type.RECORD) {
      throw new DataException("a journal event's schema must be a record, not " + avro.getType());
    }
    Schema inner = schema(avro);
    SchemaBuilder top = SchemaBuilder.struct().name(avro.getFullName());
    for (var field : inner.fields()) {
      if (!dropped.contains(field.name()) && !dropped.contains(avro.getName() + "." + field.name())) {
        top.field(field.name(), field.schema());
      }
    }
    return new Mapped(avro.getName(), inner, top.field(EVENT_TYPE, Schema.STRING_SCHEMA).build());
  }

  static Schema schema(org.apache.avro.Schema avro) {
    switch (avro.getType()) {
      case RECORD: {
        SchemaBuilder b = SchemaBuilder.struct().name(avro.getFullName());
        for (org.apache.avro.Schema.Field f : avro.getFields()) {
          b.field(f.name(), schema(f.schema()));
        }
        return b.build();
      }
      case UNION: {
        List<org.apache.avro.Schema> types = avro.getTypes();
        List<org.apache.avro.Schema> nonNull = types.stream()
            .filter(t -> t.getType() != org.apache.avro.Schema.Type.NULL).toList();
        if (nonNull.size() != 1) {
          throw new DataException("unions other than [null, T] have no Connect type: " + avro);
        }
        return optional(schema(nonNull.get(0)));
      }
      case ARRAY:
        return SchemaBuilder.array(schema(avro.getElementType())).build();
      case MAP:
        return SchemaBuilder.map(Schema.STRING_SCHEMA, schema(avro.getValueType())).build();
      case ENUM:
      case STRING:
        return Schema.STRING_SCHEMA;
      case BYTES:
      case FIXED:
        return Schema.BYTES_SCHEMA;
      case INT:
        return Schema.INT32_SCHEMA;
      case LONG:
        return Schema.INT64_SCHEMA;
      case FLOAT:
        return Schema.FLOAT32_SCHEMA;
      case DOUBLE:
        return Schema.FLOAT64_SCHEMA;
      case BOOLEAN:
        return Schema.BOOLEAN_SCHEMA;
      default:
        throw new DataException("no Connect type for Avro " + avro.getType());
    }
  }

  private static Schema optional(Schema s) {
    SchemaBuilder b;
    switch (s.type()) {
      case STRUCT:
        b = SchemaBuilder.struct().name(s.name());
        s.fields().forEach(f -> b.field(f.name(), f.schema()));
        break;
      case ARRAY:
        b = SchemaBuilder.array(s.valueSchema());
        break;
      case MAP:
        b = SchemaBuilder.map(s.keySchema(), s.valueSchema());
        break;
      default:
        b = SchemaBuilder.type(s.type());
    }
    return b.optional().build();
  }

  static Object value(Schema schema, Object avro) {
    if (avro == null) {
      return null;
    }
    switch (schema.type()) {
      case STRUCT: {
        GenericRecord r = (GenericRecord) avro;
        Struct s = new Struct(schema);
        for (var field : schema.fields()) {
          s.put(field, value(field.schema(), r.get(field.name())));
        }
        return s;
      }
      case ARRAY: {
        List<Object> out = new ArrayList<>();
        for (Object item : (List<?>) avro) {
          out.add(value(schema.valueSchema(), item));
        }
        return out;
      }
      case MAP: {
        Map<String, Object> out = new HashMap<>();
        ((Map<?, ?>) avro).forEach((k, v) -> out.put(k.toString(), value(schema.valueSchema(), v)));
        return out;
      }
      case STRING:
        return avro.toString(); // Utf8 and enum symbols
      case BYTES:
        if (avro instanceof ByteBuffer buf) {
          byte[] bytes = new byte[buf.remaining()];
          buf.duplicate().get(bytes);
          return bytes;
        }
        return ((GenericData.Fixed) avro).bytes();
      default:
        return avro; // Integer, Long, Float, Double, Boolean: the same Java types in Connect
    }
  }
}
