import { Arbitrary, Either, FastCheck as fc, Schema } from "effect"
import { Stats } from "../../src/domain/Event.js"

const survivesJson = (s: Stats) =>
  Either.isRight(Schema.decodeUnknownEither(Stats)(JSON.parse(JSON.stringify(Schema.encodeSync(Stats)(s)))))

/**
 * Any value of the shared Stats schema that a server could send as JSON, so a fake server keeps up with the
 * schema. (A plain sample holds NaN or ±Infinity about one time in twenty: JSON turns them into null, the
 * client rejects the answer, and a test fails now and then for no reason of its own.)
 */
export const sampleStats = (): Stats => fc.sample(Arbitrary.make(Stats).filter(survivesJson), 1)[0]
