/** `1 pack`, `2 packs`: counts in messages read as a person would write them. */
export function plural(count: number, noun: string, nouns = `${noun}s`): string {
  return `${count} ${count === 1 ? noun : nouns}`;
}
